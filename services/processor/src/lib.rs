//! fleetpulse processor
