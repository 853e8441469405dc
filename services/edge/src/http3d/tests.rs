//! Tests of the 3D printer driver.
