//! Subtree walks with GETBULK (v2c, v3) or GETNEXT (v1), bounded against
//! agent loops, with adaptive max-repetitions.

use super::{Oid, SnmpClient, SnmpError, SnmpValue, SnmpVersion, VarBind};

impl SnmpClient {
    /// Every variable binding under `subtree`, in OID order.
    ///
    /// Stops when a returned OID leaves the subtree, at endOfMibView, or when
    /// the agent returns nothing. A subtree the agent does not implement is an
    /// empty result, not an error. Fails with a typed error when the agent
    /// returns an OID that does not increase (a loop), or when the walk
    /// exceeds `max_walk_varbinds` or `max_walk_iterations`.
    ///
    /// GETBULK max-repetitions adapts per target (kept in the client's
    /// [`super::SnmpSession`]): a `tooBig` answer or a response over
    /// `max_response_bytes` halves it and the same request is retried
    /// smaller; a timeout halves it for the next request (the error is
    /// returned); successes grow it back slowly up to `max_repetitions`.
    pub async fn walk(&mut self, subtree: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        let max_varbinds = self.options().max_walk_varbinds;
        let max_iterations = self.options().max_walk_iterations;
        let max_repetitions = self.options().max_repetitions.max(1);
        let version = self.version();
        let mut out: Vec<VarBind> = Vec::new();
        let mut cursor = subtree.clone();
        for _ in 0..max_iterations {
            let response = match version {
                SnmpVersion::V2c | SnmpVersion::V3 => {
                    let reps = self.session().repetitions(max_repetitions);
                    let r = self.get_bulk(std::slice::from_ref(&cursor), 0, reps).await;
                    match &r {
                        Ok(_) => self.session().bulk_succeeded(max_repetitions),
                        Err(SnmpError::Agent { status: 1, .. })
                        | Err(SnmpError::ResponseTooLarge { .. })
                            if reps > 1 =>
                        {
                            let next = self.session().shrink_repetitions(max_repetitions);
                            repetitions_shrunk(self, reps, next, "too_big");
                            continue;
                        }
                        Err(SnmpError::Timeout { .. }) if reps > 1 => {
                            let next = self.session().shrink_repetitions(max_repetitions);
                            repetitions_shrunk(self, reps, next, "timeout");
                        }
                        Err(_) => {}
                    }
                    r
                }
                SnmpVersion::V1 => self.get_next(std::slice::from_ref(&cursor)).await,
            };
            let varbinds = match response {
                Ok(v) => v,
                // v1 agents signal the end of their MIB with noSuchName.
                Err(SnmpError::Agent { status: 2, .. }) if version == SnmpVersion::V1 => {
                    return Ok(out)
                }
                Err(e) => return Err(e),
            };
            if varbinds.is_empty() {
                return Ok(out);
            }
            for (oid, value) in varbinds {
                if matches!(value, SnmpValue::EndOfMibView) || !oid.starts_with(subtree) {
                    return Ok(out);
                }
                if oid <= cursor {
                    return Err(SnmpError::NonIncreasingOid {
                        previous: cursor,
                        received: oid,
                    });
                }
                if out.len() >= max_varbinds {
                    return Err(SnmpError::TooManyVarbinds {
                        subtree: subtree.clone(),
                        limit: max_varbinds,
                    });
                }
                cursor = oid.clone();
                out.push((oid, value));
            }
        }
        Err(SnmpError::TooManyIterations {
            subtree: subtree.clone(),
            limit: max_iterations,
        })
    }
}

fn repetitions_shrunk(client: &SnmpClient, from: u32, to: u32, reason: &'static str) {
    tracing::debug!(peer = %client.peer(), from, to, reason, "GETBULK max-repetitions reduced");
    metrics::counter!("fleetpulse_edge_bulk_shrinks_total", "reason" => reason).increment(1);
}
