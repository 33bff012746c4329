//! Patient lookups: a schema id is retried while the registry is unavailable
//! (without limit: the environment's fault never quarantines) and while it
//! answers "not found" (for `unknown_id_grace`, as a restarting registry
//! answers 404 for ids it holds until it has re-read its `_schemas` topic).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{RegistryError, ResolvedSchema, Result, SchemaRegistry};
use crate::fault::{Backoff, Classify, Shutdown};

/// What a patient lookup reports as it goes (for logs and metrics).
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The registry cannot answer; retrying after `retry_in`.
    Unavailable {
        /// The failure.
        error: &'a RegistryError,
        /// Wait before the next attempt.
        retry_in: Duration,
    },
    /// The registry does not know the id (yet); retrying after `retry_in`,
    /// for `left` more at most.
    NotFoundYet {
        /// The 404.
        error: &'a RegistryError,
        /// Wait before the next attempt.
        retry_in: Duration,
        /// What remains of the grace.
        left: Duration,
    },
    /// Found after the registry had answered 404 for `waited`.
    FoundAfterWait {
        /// From the first 404 to the answer.
        waited: Duration,
    },
    /// Still not found at the end of the grace: given up on for the life of
    /// the process.
    GaveUp {
        /// The error returned ([`RegistryError::Unknown`]).
        error: &'a RegistryError,
    },
}

/// The grace of one id: since when the registry has answered 404 for it.
struct Grace {
    since: Instant,
    backoff: Backoff,
}

impl SchemaRegistry {
    /// [`SchemaRegistry::schema`], waiting out the environment: while the
    /// registry is unavailable it retries with `backoff` for as long as it
    /// takes; while it answers 404 ([`RegistryError::NotFound`], a schema id
    /// or a reference), for `unknown_id_grace` from the first 404 after the
    /// registry was last reachable. Then the id is remembered as unknown and
    /// this answers [`RegistryError::Unknown`] (the message's fault) at once,
    /// without a request, for the life of the process.
    ///
    /// Other errors return at once. An environment's error is returned only
    /// when `shutdown` cut a wait short, or `backoff` (unbounded in the
    /// pipeline) ran out.
    pub async fn schema_patiently(
        &self,
        id: u32,
        mut backoff: Backoff,
        shutdown: &Shutdown,
        mut report: impl FnMut(Lookup<'_>),
    ) -> Result<Arc<ResolvedSchema>> {
        if let Some(e) = self.given_up(id) {
            return Err(e);
        }
        let fresh = backoff.clone();
        let mut grace: Option<Grace> = None;
        loop {
            let error = match self.schema(id).await {
                Ok(schema) => {
                    if let Some(g) = grace {
                        report(Lookup::FoundAfterWait {
                            waited: g.since.elapsed(),
                        });
                    }
                    return Ok(schema);
                }
                Err(e) => e,
            };
            let retry_in = match &error {
                RegistryError::NotFound { .. } => {
                    let g = grace.get_or_insert_with(|| Grace {
                        since: Instant::now(),
                        // Fresh: after an outage `backoff` may be long.
                        backoff: fresh.clone().with_deadline(self.unknown_id_grace()),
                    });
                    let Some(retry_in) = g.backoff.next_delay() else {
                        let error = unknown(error, g.since.elapsed());
                        self.give_up(id, error.clone());
                        report(Lookup::GaveUp { error: &error });
                        return Err(error);
                    };
                    let left = self.unknown_id_grace().saturating_sub(g.since.elapsed());
                    report(Lookup::NotFoundYet {
                        error: &error,
                        retry_in,
                        left,
                    });
                    retry_in
                }
                e if e.is_retryable() => {
                    // The grace starts again at the next 404: the registry
                    // that comes back re-reads its log first.
                    grace = None;
                    let Some(retry_in) = backoff.next_delay() else {
                        return Err(error);
                    };
                    report(Lookup::Unavailable { error: e, retry_in });
                    retry_in
                }
                _ => return Err(error),
            };
            if !shutdown.sleep(retry_in).await {
                return Err(error);
            }
        }
    }
}

/// The error of an id still not found after the grace.
fn unknown(error: RegistryError, waited: Duration) -> RegistryError {
    match error {
        RegistryError::NotFound {
            what,
            code,
            message,
        } => RegistryError::Unknown {
            what,
            code,
            message,
            waited,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::Lookup;
    use crate::config::RegistryConfig;
    use crate::decode::{FramedDecoder, FramedKind};
    use crate::fault::{Backoff, Classify, Fault, Shutdown};
    use crate::observability::Metrics;
    use crate::record::Rejections;
    use crate::registry::mock::{MockRegistry, Outage};
    use crate::registry::{frame, RegistryError, SchemaRegistry};

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;

    fn client(mock: &MockRegistry, grace: Duration) -> SchemaRegistry {
        let mut cfg = RegistryConfig::new(mock.url());
        cfg.unknown_id_grace = grace;
        cfg.timeout = Duration::from_secs(2);
        SchemaRegistry::new(&cfg).expect("client")
    }

    fn quick() -> Backoff {
        Backoff::new(Duration::from_millis(20), Duration::from_millis(100))
    }

    /// What a lookup reported, by kind.
    #[derive(Debug, Default)]
    struct Seen {
        unavailable: usize,
        not_found_yet: usize,
        found_after_wait: usize,
        gave_up: usize,
    }

    impl Seen {
        fn record(&mut self, event: Lookup<'_>) {
            match event {
                Lookup::Unavailable { .. } => self.unavailable += 1,
                Lookup::NotFoundYet { .. } => self.not_found_yet += 1,
                Lookup::FoundAfterWait { .. } => self.found_after_wait += 1,
                Lookup::GaveUp { .. } => self.gave_up += 1,
            }
        }
    }

    #[tokio::test]
    async fn a_restarting_registry_404s_are_waited_out() {
        let mock = MockRegistry::start();
        let id = mock.register("t-value", "AVRO", SCHEMA, &[]);
        mock.restart(Duration::from_millis(500));
        let registry = client(&mock, Duration::from_secs(10));
        // What a client without the grace would conclude.
        let plain = registry.schema(id).await.unwrap_err();
        assert!(
            matches!(plain, RegistryError::NotFound { code: 40403, .. }),
            "{plain}"
        );
        let mut seen = Seen::default();
        let schema = registry
            .schema_patiently(id, quick(), &Shutdown::new(), |e| seen.record(e))
            .await
            .expect("found once the registry has re-read its log");
        assert_eq!(schema.id, id);
        assert!(seen.not_found_yet >= 1, "{seen:?}");
        assert_eq!(seen.found_after_wait, 1, "{seen:?}");
        assert_eq!(seen.gave_up, 0, "{seen:?}");
        assert!(!mock.is_reading());
    }

    #[tokio::test]
    async fn an_unknown_id_costs_the_grace_once_then_nothing() {
        let mock = MockRegistry::start();
        let grace = Duration::from_millis(400);
        let registry = client(&mock, grace);
        let mut seen = Seen::default();
        let started = Instant::now();
        let err = registry
            .schema_patiently(99, quick(), &Shutdown::new(), |e| seen.record(e))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= grace, "{waited:?}");
        assert!(waited < grace * 4, "{waited:?}");
        assert!(
            matches!(err, RegistryError::Unknown { code: 40403, .. }),
            "{err}"
        );
        assert_eq!(err.fault(), Fault::Message);
        assert!(err.to_string().contains("unknown_id_grace"), "{err}");
        assert_eq!(seen.gave_up, 1, "{seen:?}");
        // 20, 40, 80, 100, 100 ms...: a handful of requests, not a busy loop.
        let requests = mock.requests("/schemas/ids/99");
        assert!((3..=12).contains(&requests), "{requests}");

        // Remembered: at once, without a request, from any clone.
        for r in [registry.clone(), registry] {
            let started = Instant::now();
            let again = r
                .schema_patiently(99, quick(), &Shutdown::new(), |e| seen.record(e))
                .await
                .unwrap_err();
            assert!(started.elapsed() < Duration::from_millis(100));
            assert!(matches!(again, RegistryError::Unknown { .. }), "{again}");
        }
        assert_eq!(mock.requests("/schemas/ids/99"), requests);
        assert_eq!(seen.gave_up, 1, "{seen:?}");
    }

    #[tokio::test]
    async fn no_grace_quarantines_at_the_first_404() {
        let mock = MockRegistry::start();
        let registry = client(&mock, Duration::ZERO);
        let err = registry
            .schema_patiently(5, quick(), &Shutdown::new(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.fault(), Fault::Message, "{err}");
        assert_eq!(mock.requests("/schemas/ids/5"), 1);
    }

    /// The grace starts at the first 404 after the registry was reachable:
    /// an outage longer than the grace, then 404s shorter than it, loses
    /// nothing.
    #[tokio::test]
    async fn the_grace_starts_when_the_registry_answers_after_an_outage() {
        let mock = MockRegistry::start();
        let id = mock.register("t-value", "AVRO", SCHEMA, &[]);
        let registry = client(&mock, Duration::from_millis(800));
        mock.go_down(Outage::Refuse);
        let mock = Arc::new(mock);
        let comeback = tokio::spawn({
            let mock = mock.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                tokio::task::spawn_blocking(move || {
                    mock.restart(Duration::from_millis(400));
                    mock.come_back();
                })
                .await
                .unwrap();
            }
        });
        let mut seen = Seen::default();
        let started = Instant::now();
        let schema = registry
            .schema_patiently(id, quick(), &Shutdown::new(), |e| seen.record(e))
            .await
            .expect("the 404s after the outage are within the grace");
        comeback.await.unwrap();
        assert_eq!(schema.id, id);
        assert!(started.elapsed() >= Duration::from_millis(1300));
        assert!(seen.unavailable >= 1, "{seen:?}");
        assert!(seen.not_found_yet >= 1, "{seen:?}");
        assert_eq!((seen.found_after_wait, seen.gave_up), (1, 0), "{seen:?}");
    }

    #[tokio::test]
    async fn shutdown_cuts_the_grace_short_and_gives_nothing_up() {
        let mock = MockRegistry::start();
        let registry = client(&mock, Duration::from_secs(60));
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            s.trigger();
        });
        let started = Instant::now();
        let err = registry
            .schema_patiently(7, quick(), &shutdown, |_| {})
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        // Not decided: the message is not at fault, nothing is remembered.
        assert_eq!(err.fault(), Fault::Environment, "{err}");
        assert!(registry.given_up(7).is_none());
    }

    /// The framed decoder: messages of a known id decode while an unknown
    /// id's wait the grace once, in the first chunk; a later chunk with it
    /// is quarantined at once, without a request.
    #[test]
    fn the_framed_decoder_pays_the_grace_once_per_id() {
        let mock = MockRegistry::start();
        let id = mock.register("t-value", "AVRO", SCHEMA, &[]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let grace = Duration::from_millis(300);
        let metrics = Arc::new(Metrics::new());
        let mut decoder = FramedDecoder::new(
            FramedKind::Avro,
            client(&mock, grace),
            runtime.handle().clone(),
            (Duration::from_millis(20), Duration::from_millis(100)),
            Shutdown::new(),
            metrics.clone(),
        );
        let good = frame(id, &[2]);
        let unknown = frame(4242, &[2]);
        let values = [Some(&good[..]), Some(&unknown[..]), Some(&good[..])];
        let mut decode = || {
            let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
            let started = Instant::now();
            decoder.decode(&values, &mut parts, &mut rejected).unwrap();
            let rows: Vec<usize> = parts.iter().flat_map(|p| p.rows.clone()).collect();
            let rejected: Vec<(usize, String)> =
                rejected.into_iter().map(|r| (r.index, r.reason)).collect();
            (started.elapsed(), rows, rejected)
        };
        let (first, rows, rejected) = decode();
        assert!(first >= grace, "{first:?}");
        assert_eq!(rows, [0, 2]);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].0, 1);
        assert!(rejected[0].1.contains("4242"), "{rejected:?}");
        let requests = mock.requests("/schemas/ids/4242");
        let (second, rows, rejected) = decode();
        assert!(second < grace / 2, "{second:?}");
        assert_eq!((rows, rejected.len()), (vec![0, 2], 1));
        assert_eq!(mock.requests("/schemas/ids/4242"), requests);
        let text = metrics.encode();
        assert!(
            text.contains(r#"inlet_registry_unknown_ids_total{outcome="given_up"} 1"#),
            "{text}"
        );
    }
}
