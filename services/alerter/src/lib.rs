//! fleetpulse alerter
