//! Subtree walks with GETBULK (v2c) or GETNEXT (v1), bounded against agent loops.

use super::{Oid, SnmpClient, SnmpError, SnmpValue, SnmpVersion, VarBind};

impl SnmpClient {
    /// Every variable binding under `subtree`, in OID order.
    ///
    /// Stops when a returned OID leaves the subtree, at endOfMibView, or when
    /// the agent returns nothing. A subtree the agent does not implement is an
    /// empty result, not an error. Fails with a typed error when the agent
    /// returns an OID that does not increase (a loop), or when the walk
    /// exceeds `max_walk_varbinds` or `max_walk_iterations`.
    pub async fn walk(&mut self, subtree: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        let max_varbinds = self.options().max_walk_varbinds;
        let max_iterations = self.options().max_walk_iterations;
        let max_repetitions = self.options().max_repetitions.max(1);
        let version = self.options().version;
        let mut out: Vec<VarBind> = Vec::new();
        let mut cursor = subtree.clone();
        for _ in 0..max_iterations {
            let response = match version {
                SnmpVersion::V2c => {
                    self.get_bulk(std::slice::from_ref(&cursor), 0, max_repetitions)
                        .await
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
