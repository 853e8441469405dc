//! fleetpulse sim
