//! fleetpulse edge
