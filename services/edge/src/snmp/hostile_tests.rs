//! Hostile SNMPv3 agents (garbage security parameters, forged digests,
//! bogus discovery reports) and adaptive GETBULK against a tooBig agent.
//! Every case must end in a typed error, never a panic or a stall.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v2::{ObjectSyntax, SimpleSyntax};
use rasn_snmp::{v2, v2c, v3};
use tokio::net::UdpSocket;

use super::credentials::SnmpCredentials;
use super::usm::AuthProtocol;
use super::{oid, Oid, SnmpClient, SnmpError, SnmpOptions, SnmpSession, SnmpVersion};

/// How the fake v3 agent answers every datagram.
#[derive(Debug, Clone, Copy)]
enum V3Mode {
    /// A v3 message whose security parameters are not a USM sequence.
    GarbageSecurityParameters,
    /// A discovery Report without an engine id.
    EmptyEngineId,
    /// A proper discovery report, then authenticated-flagged responses with a forged digest.
    ForgedDigest,
    /// Random bytes.
    RandomBytes,
}

fn usm(engine: &[u8], auth: Vec<u8>) -> Vec<u8> {
    rasn::ber::encode(&v3::USMSecurityParameters {
        authoritative_engine_id: OctetString::from(engine.to_vec()),
        authoritative_engine_boots: Integer::from(1),
        authoritative_engine_time: Integer::from(100),
        user_name: OctetString::from(b"fpuser".to_vec()),
        authentication_parameters: OctetString::from(auth),
        privacy_parameters: OctetString::from(Vec::new()),
    })
    .expect("encode usm")
}

fn v3_reply(msg_id: Integer, flags: u8, security: Vec<u8>, pdus: v2::Pdus) -> Vec<u8> {
    rasn::ber::encode(&v3::Message {
        version: Integer::from(3),
        global_data: v3::HeaderData {
            message_id: msg_id,
            max_size: Integer::from(65_507),
            flags: OctetString::from(vec![flags]),
            security_model: Integer::from(3),
        },
        security_parameters: OctetString::from(security),
        scoped_data: v3::ScopedPduData::CleartextPdu(v3::ScopedPdu {
            engine_id: OctetString::from(b"engine".to_vec()),
            name: OctetString::from(Vec::new()),
            data: pdus,
        }),
    })
    .expect("encode v3")
}

fn pdu(request_id: i32, name: &[u32]) -> v2::Pdu {
    v2::Pdu {
        request_id,
        error_status: 0,
        error_index: 0,
        variable_bindings: vec![v2::VarBind {
            name: ObjectIdentifier::new_unchecked(name.to_vec().into()),
            value: v2::VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::Integer(
                Integer::from(1),
            ))),
        }],
    }
}

const UNKNOWN_ENGINE_IDS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0];

async fn v3_agent(mode: V3Mode) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(msg) = rasn::ber::decode::<v3::Message>(&buf[..n]) else {
                continue;
            };
            let request_id = match &msg.scoped_data {
                v3::ScopedPduData::CleartextPdu(p) => match &p.data {
                    v2::Pdus::GetRequest(v2::GetRequest(p)) => p.request_id,
                    v2::Pdus::GetNextRequest(v2::GetNextRequest(p)) => p.request_id,
                    _ => 0,
                },
                // Encrypted: we cannot read it, answer with id 0.
                v3::ScopedPduData::EncryptedPdu(_) => 0,
            };
            let id = msg.global_data.message_id.clone();
            let discovery = msg.global_data.flags.first().copied().unwrap_or(0) & 1 == 0;
            let out = match mode {
                V3Mode::GarbageSecurityParameters => v3_reply(
                    id,
                    0,
                    vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02],
                    v2::Pdus::Report(v2::Report(pdu(request_id, UNKNOWN_ENGINE_IDS))),
                ),
                V3Mode::EmptyEngineId => v3_reply(
                    id,
                    0,
                    usm(b"", Vec::new()),
                    v2::Pdus::Report(v2::Report(pdu(request_id, UNKNOWN_ENGINE_IDS))),
                ),
                V3Mode::ForgedDigest if discovery => v3_reply(
                    id,
                    0,
                    usm(b"\x80\x00\x1f\x88\x04fake", Vec::new()),
                    v2::Pdus::Report(v2::Report(pdu(request_id, UNKNOWN_ENGINE_IDS))),
                ),
                V3Mode::ForgedDigest => v3_reply(
                    id,
                    1,
                    usm(b"\x80\x00\x1f\x88\x04fake", vec![0xAB; 24]),
                    v2::Pdus::Response(v2::Response(pdu(request_id, &[1, 3, 6, 1, 2, 1, 1, 5, 0]))),
                ),
                V3Mode::RandomBytes => (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
            };
            let _ = socket.send_to(&out, peer).await;
        }
    });
    (addr, task)
}

fn v3_opts() -> SnmpOptions {
    SnmpOptions {
        timeout: Duration::from_millis(300),
        retries: 1,
        version: SnmpVersion::V3,
        ..SnmpOptions::default()
    }
}

async fn v3_get(addr: std::net::SocketAddr) -> Result<(), SnmpError> {
    let creds = SnmpCredentials {
        user: Some("fpuser".into()),
        auth_protocol: Some(AuthProtocol::Sha256),
        auth_password: Some("authpass123".into()),
        ..Default::default()
    };
    let security = creds.resolve("t", SnmpVersion::V2c).expect("creds");
    let mut c = SnmpClient::connect_with(addr, security, &v3_opts(), SnmpSession::new()).await?;
    c.get(&[oid(&[1, 3, 6, 1, 2, 1, 1, 5, 0])])
        .await
        .map(|_| ())
}

#[tokio::test]
async fn hostile_v3_agents_give_typed_errors() {
    let (addr, task) = v3_agent(V3Mode::GarbageSecurityParameters).await;
    let e = v3_get(addr).await.expect_err("garbage security parameters");
    assert!(
        matches!(&e, SnmpError::Decode { reason, raw } if reason.contains("USM") && !raw.is_empty()),
        "{e:?}"
    );
    task.abort();

    let (addr, task) = v3_agent(V3Mode::EmptyEngineId).await;
    let e = v3_get(addr).await.expect_err("empty engine id");
    assert!(
        matches!(&e, SnmpError::Usm { reason } if reason.contains("engine id")),
        "{e:?}"
    );
    task.abort();

    let (addr, task) = v3_agent(V3Mode::ForgedDigest).await;
    let e = v3_get(addr).await.expect_err("forged digest");
    assert!(
        matches!(&e, SnmpError::AuthFailed { reason } if reason.contains("digest")),
        "{e:?}"
    );
    task.abort();

    let (addr, task) = v3_agent(V3Mode::RandomBytes).await;
    let e = v3_get(addr).await.expect_err("random bytes");
    assert!(matches!(&e, SnmpError::Decode { .. }), "{e:?}");
    task.abort();
}

/// A v2c agent whose GETBULK answers are tooBig above `limit` repetitions;
/// it records every max-repetitions asked for.
async fn too_big_agent(
    limit: u32,
    asked: Arc<Mutex<Vec<u32>>>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    // The subtree 1.3.6.1.4.1.99999.1.{1..=30}.
    let mib: Vec<Vec<u32>> = (1..=30)
        .map(|i| vec![1, 3, 6, 1, 4, 1, 99999, 1, i])
        .collect();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(msg) = rasn::ber::decode::<v2c::Message<v2::Pdus>>(&buf[..n]) else {
                continue;
            };
            let v2::Pdus::GetBulkRequest(v2::GetBulkRequest(p)) = msg.data else {
                continue;
            };
            asked.lock().expect("lock").push(p.max_repetitions);
            let start: Vec<u32> = p.variable_bindings[0].name.to_vec();
            let (status, vbs) = if p.max_repetitions > limit {
                (1, Vec::new())
            } else {
                let vbs: Vec<v2::VarBind> = mib
                    .iter()
                    .filter(|o| **o > start)
                    .take(p.max_repetitions as usize)
                    .map(|o| v2::VarBind {
                        name: ObjectIdentifier::new_unchecked(o.clone().into()),
                        value: v2::VarBindValue::Value(ObjectSyntax::Simple(
                            SimpleSyntax::Integer(Integer::from(7)),
                        )),
                    })
                    .chain(std::iter::once(v2::VarBind {
                        name: ObjectIdentifier::new_unchecked(
                            vec![1, 3, 6, 1, 4, 1, 99999, 2].into(),
                        ),
                        value: v2::VarBindValue::EndOfMibView,
                    }))
                    .take(p.max_repetitions as usize)
                    .collect();
                (0, vbs)
            };
            let out = rasn::ber::encode(&v2c::Message {
                version: Integer::from(1),
                community: OctetString::from(b"public".to_vec()),
                data: v2::Pdus::Response(v2::Response(v2::Pdu {
                    request_id: p.request_id,
                    error_status: status,
                    error_index: 0,
                    variable_bindings: vbs,
                })),
            })
            .expect("encode");
            let _ = socket.send_to(&out, peer).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn getbulk_halves_on_too_big_and_remembers_per_target() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (addr, task) = too_big_agent(5, asked.clone()).await;
    let opts = SnmpOptions {
        timeout: Duration::from_millis(300),
        retries: 0,
        max_repetitions: 20,
        ..SnmpOptions::default()
    };
    let session = SnmpSession::new();
    let security = super::Security::Community {
        version: SnmpVersion::V2c,
        community: b"public".to_vec(),
    };
    let subtree: Oid = "1.3.6.1.4.1.99999.1".parse().expect("oid");
    let mut c = SnmpClient::connect_with(addr, security.clone(), &opts, session.clone())
        .await
        .expect("connect");
    let walked = c
        .walk(&subtree)
        .await
        .expect("walk succeeds after shrinking");
    assert_eq!(walked.len(), 30, "every row read");
    let first: Vec<u32> = asked.lock().expect("lock").clone();
    assert_eq!(&first[..3], &[20, 10, 5], "halved on tooBig: {first:?}");
    // Growth is slow (a quarter after 4 successes): one probe above the
    // limit (6) is refused and halved again, never a jump back to 20.
    assert!(first[3..].iter().all(|r| *r <= 6), "{first:?}");
    assert!(first[2..6].iter().all(|r| *r == 5), "{first:?}");

    // A new client for the same target (next poll) starts from what was learnt.
    asked.lock().expect("lock").clear();
    let mut c = SnmpClient::connect_with(addr, security, &opts, session.clone())
        .await
        .expect("connect");
    c.walk(&subtree).await.expect("second walk");
    let second = asked.lock().expect("lock").clone();
    assert!(second[0] <= 6, "remembered per target: {second:?}");
    assert!(!second.contains(&20), "{second:?}");
    task.abort();
}

/// How the authPriv agent protects its (otherwise correct) Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    /// msgFlags 0, plaintext scoped PDU: what an on-path injector can forge.
    None,
    /// A valid digest but a cleartext scoped PDU.
    AuthOnly,
    /// What the request asked for.
    AuthPriv,
}

const HOSTILE_ENGINE: &[u8] = b"\x80\x00\x1f\x88\x04hostile";

/// A v3 agent that knows the user's keys: it answers discovery with an
/// unauthenticated Report (as real agents do), decrypts each authPriv
/// request to learn its request-id, and answers it at `protection`.
async fn authpriv_agent(
    user: Arc<super::UsmUser>,
    protection: Protection,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let keys = user.localize(HOSTILE_ENGINE);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(msg) = rasn::ber::decode::<v3::Message>(&buf[..n]) else {
                continue;
            };
            let id = msg.global_data.message_id.clone();
            let Some(msg_id) = i64::try_from(&id).ok().and_then(|i| i32::try_from(i).ok()) else {
                continue;
            };
            let discovery = msg.global_data.flags.first().copied().unwrap_or(0) & 1 == 0;
            if discovery {
                let out = v3_reply(
                    id,
                    0,
                    usm(HOSTILE_ENGINE, Vec::new()),
                    v2::Pdus::Report(v2::Report(pdu(0, UNKNOWN_ENGINE_IDS))),
                );
                let _ = socket.send_to(&out, peer).await;
                continue;
            }
            let Ok(params) =
                rasn::ber::decode::<v3::USMSecurityParameters>(&msg.security_parameters)
            else {
                continue;
            };
            let v3::ScopedPduData::EncryptedPdu(ct) = &msg.scoped_data else {
                continue;
            };
            let Some((_, priv_key)) = keys.privacy.as_ref() else {
                continue;
            };
            let boots = i64::try_from(&params.authoritative_engine_boots).unwrap_or(0) as u32;
            let time = i64::try_from(&params.authoritative_engine_time).unwrap_or(0) as u32;
            let mut plain = ct.to_vec();
            if super::usm::aes_cfb(
                false,
                priv_key,
                boots,
                time,
                &params.privacy_parameters,
                &mut plain,
            )
            .is_err()
            {
                continue;
            }
            let Ok((scoped, _)) = rasn::ber::decode_with_remainder::<v3::ScopedPdu>(&plain) else {
                continue;
            };
            let v2::Pdus::GetRequest(v2::GetRequest(req)) = scoped.data else {
                continue;
            };
            let response = v2::Pdus::Response(v2::Response(pdu(
                req.request_id,
                &[1, 3, 6, 1, 2, 1, 1, 5, 0],
            )));
            let engine = super::usm::Engine {
                id: HOSTILE_ENGINE.to_vec(),
                boots: 1,
                time: 100,
                synced_at: std::time::Instant::now(),
            };
            let level = match protection {
                Protection::None => None,
                Protection::AuthOnly => Some(super::SecurityLevel::AuthNoPriv),
                Protection::AuthPriv => Some(super::SecurityLevel::AuthPriv),
            };
            let out = match level {
                None => v3_reply(id, 0, usm(HOSTILE_ENGINE, Vec::new()), response),
                Some(level) => super::client::encode_v3(
                    &user.name,
                    level,
                    Some(&engine),
                    Some(&keys),
                    42,
                    msg_id,
                    65_507,
                    response,
                )
                .expect("encode response"),
            };
            let _ = socket.send_to(&out, peer).await;
        }
    });
    (addr, task)
}

fn authpriv_security() -> (super::Security, Arc<super::UsmUser>) {
    let creds = SnmpCredentials {
        user: Some("fpuser".into()),
        auth_protocol: Some(AuthProtocol::Sha256),
        auth_password: Some("authpass123".into()),
        priv_protocol: Some(super::PrivProtocol::Aes128),
        priv_password: Some("privpass123".into()),
        ..Default::default()
    };
    let security = creds.resolve("t", SnmpVersion::V3).expect("creds");
    let super::Security::Usm(user) = &security else {
        panic!("v3 credentials resolve to a USM user");
    };
    let user = user.clone();
    assert_eq!(user.level, super::SecurityLevel::AuthPriv);
    (security, user)
}

async fn authpriv_get(protection: Protection) -> Result<Vec<super::VarBind>, SnmpError> {
    let (security, user) = authpriv_security();
    let (addr, task) = authpriv_agent(user, protection).await;
    let mut c = SnmpClient::connect_with(addr, security, &v3_opts(), SnmpSession::new())
        .await
        .expect("connect");
    let r = c.get(&[oid(&[1, 3, 6, 1, 2, 1, 1, 5, 0])]).await;
    task.abort();
    r
}

/// An authPriv request answered with a matching Response at a lower level
/// (plaintext and unauthenticated, or authenticated but unencrypted) is a
/// downgrade an on-path host can forge: rejected with a typed error.
#[tokio::test]
async fn authpriv_rejects_downgraded_responses() {
    for protection in [Protection::None, Protection::AuthOnly] {
        let e = authpriv_get(protection)
            .await
            .expect_err("downgraded response must be rejected");
        assert!(
            matches!(&e, SnmpError::AuthFailed { reason } if reason.contains("downgrade")),
            "{protection:?}: {e:?}"
        );
    }
    let vbs = authpriv_get(Protection::AuthPriv)
        .await
        .expect("a properly protected response is accepted");
    assert_eq!(
        vbs,
        vec![(
            oid(&[1, 3, 6, 1, 2, 1, 1, 5, 0]),
            super::SnmpValue::Integer(1)
        )]
    );
}
