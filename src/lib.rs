//! Harness for the end-to-end tests in `tests/`: it finds the `fleetpulse`
//! binary, starts services as separate processes and runs the independent
//! Python checkers (DuckDB, pyarrow, confluent-kafka, fastavro).
