//! Checkpoints on a real S3 server (SeaweedFS on loopback): round trip with the conditional
//! `latest` put, an outage during background saves, a server that never answers, resets, 5xx and
//! latency injected by a proxy (wave-testkit's `FaultProxy`), and credentials kept out of logs
//! and errors.
//! Skips when `weed` is missing (fails under `CI=true`).

mod common;

use std::time::{Duration, Instant};

use common::{captured_logs, objects, open_s3, Weed, FAKE_SECRET};
use wave_ckpt::{Error, Retention, RetryPolicy, Saver, SaverOptions, StoreOptions, Submitted};
use wave_testkit::{Fault, FaultProxy};

/// Quick failure against a dead endpoint: 1 request retry, 1-2 s timeouts.
fn impatient(attempts: u32) -> RetryPolicy {
    let mut store = StoreOptions {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    store.retry.max_retries = 1;
    store.retry.retry_timeout = Duration::from_secs(3);
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(4),
        store,
    }
}

#[test]
fn save_list_load_round_trip_on_seaweedfs_with_conditional_latest() {
    captured_logs();
    let Some(weed) = Weed::start() else { return };
    let store = open_s3(
        &weed.endpoint,
        "wave-test/runs/roundtrip",
        RetryPolicy::default(),
    )
    .expect("open")
    .with_writer(2, "s3 test");
    assert_eq!(store.latest().expect("latest"), None);
    for step in [1, 2, 3] {
        let info = store
            .save(
                step,
                objects(step, 300_000),
                serde_json::json!({"step": step}),
            )
            .expect("save");
        assert!(
            info.latest_moved
                && info.uri == format!("s3://wave-test/runs/roundtrip/step-0000000{step}"),
            "{info:?}"
        );
    }
    assert_eq!(store.latest().expect("latest"), Some(3));
    let listed: Vec<_> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|c| (c.step, c.committed, c.objects))
        .collect();
    assert_eq!(listed, vec![(1, true, 5), (2, true, 5), (3, true, 5)]);
    let loaded = store.load(2).expect("load");
    assert_eq!(loaded.objects, objects(2, 300_000));
    assert_eq!(loaded.manifest.world_size, 2);

    // A writer that lags behind never moves `latest` back (the conditional put re-reads it).
    let lagging = store
        .save(0, objects(0, 10), serde_json::json!({}))
        .expect("save 0");
    assert!(!lagging.latest_moved);
    let report = store
        .apply_retention(Retention {
            keep_last: 1,
            keep_every: 2,
        })
        .expect("retention");
    assert_eq!(report.deleted, vec![1]);
    assert_eq!(
        store
            .list()
            .expect("list")
            .into_iter()
            .map(|c| c.step)
            .collect::<Vec<_>>(),
        vec![0, 2, 3]
    );
    assert!(matches!(
        store.load(1),
        Err(Error::NotCommitted { step: 1, .. })
    ));
}

#[test]
fn saver_rides_out_a_20_s_server_outage_and_commits_nothing_corrupt() {
    captured_logs();
    let Some(mut weed) = Weed::start() else {
        return;
    };
    // 10 attempts, backoff 0.5 s doubling to 4 s: ~30 s of retrying, longer than the outage.
    let store = open_s3(&weed.endpoint, "wave-test/runs/outage", impatient(10)).expect("open");
    let mut saver = Saver::new(
        store.clone(),
        SaverOptions {
            max_in_flight: 2,
            retention: None,
        },
    )
    .expect("saver");
    saver
        .submit(1, objects(1, 200_000), serde_json::json!({}))
        .expect("submit 1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut outcomes = Vec::new();
    while outcomes.is_empty() && Instant::now() < deadline {
        outcomes.extend(saver.poll());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        matches!(outcomes.as_slice(), [o] if o.result.is_ok()),
        "{outcomes:?}"
    );

    weed.kill();
    let down = Instant::now();
    saver
        .submit(2, objects(2, 200_000), serde_json::json!({}))
        .expect("submit 2");
    saver
        .submit(3, objects(3, 200_000), serde_json::json!({}))
        .expect("submit 3");
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down.elapsed()));
    outcomes.extend(saver.poll());
    weed.restart();
    outcomes.extend(saver.finish().expect("finish"));

    assert_eq!(
        outcomes.iter().map(|o| o.step).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for o in &outcomes {
        match &o.result {
            Ok(info) => eprintln!(
                "step {} committed after {} attempts in {:.1} s",
                o.step,
                info.attempts,
                info.elapsed.as_secs_f64()
            ),
            Err(e) => {
                // Allowed: a clear error naming the object, after the retries ran out.
                assert!(
                    e.is_transient() && e.to_string().contains("s3://wave-test/runs/outage/"),
                    "step {}: {e}",
                    o.step
                );
            }
        }
    }
    let latest = store
        .latest()
        .expect("latest")
        .expect("some step committed");
    for c in store
        .list()
        .expect("list")
        .into_iter()
        .filter(|c| c.committed)
    {
        store
            .verify(c.step)
            .unwrap_or_else(|e| panic!("committed step {} is corrupt: {e}", c.step));
    }
    assert_eq!(
        store.load(latest).expect("load latest").objects,
        objects(latest, 200_000)
    );
    assert!(
        outcomes[1..].iter().any(|o| o.result.is_ok()),
        "no save succeeded after the restart: {outcomes:?}"
    );
}

#[test]
fn secret_key_never_appears_in_logs_debug_output_or_errors() {
    let logs = captured_logs();
    let Some(weed) = Weed::start() else { return };
    let store = open_s3(
        &weed.endpoint,
        "wave-test/runs/secret",
        RetryPolicy::default(),
    )
    .expect("open");
    store
        .save(1, objects(1, 1000), serde_json::json!({}))
        .expect("save");
    store.load(1).expect("load");
    let mut texts = vec![format!("{store:?}")];
    let mut errors = vec![store.load(9).expect_err("missing step")];
    errors.push(
        store
            .save(
                2,
                vec![("x/y".into(), bytes::Bytes::new())],
                serde_json::json!({}),
            )
            .expect_err("bad name"),
    );
    // Nobody listens on this port: connection refused after the request retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dead = open_s3(
        &format!("http://127.0.0.1:{port}"),
        "wave-test/runs/secret",
        impatient(2),
    )
    .expect("open dead");
    texts.push(format!("{dead:?}"));
    errors.push(
        dead.save(1, objects(1, 10), serde_json::json!({}))
            .expect_err("dead endpoint"),
    );
    errors.push(dead.latest().expect_err("dead endpoint"));
    // A bucket that does not exist: the server's own error message.
    let missing_bucket = open_s3(&weed.endpoint, "no-such-bucket/x", impatient(1)).expect("open");
    // (SeaweedFS may create buckets on demand; then there is no error to check.)
    if let Err(e) = missing_bucket.save(1, objects(1, 10), serde_json::json!({})) {
        errors.push(e);
    }
    for e in &errors {
        let mut chain = format!("{e}\n{e:?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(&format!("\n{s}"));
            source = s.source();
        }
        texts.push(chain);
    }
    let logged =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())).to_string();
    assert!(
        logged.contains("put s3://wave-test/runs/secret/step-00000001/model.safetensors"),
        "debug logs were not captured"
    );
    texts.push(logged);
    for t in &texts {
        assert!(!t.contains(FAKE_SECRET), "secret leaked in: {t}");
    }
}

/// Longer than any deadline below, so that a blackholed request is still waiting when the test
/// looks; one request retry, one whole-save attempt.
fn patient_single_attempt() -> RetryPolicy {
    let mut policy = impatient(1);
    policy.store.timeout = Duration::from_secs(60);
    policy.store.retry.retry_timeout = Duration::from_secs(60);
    policy
}

/// Polls until an outcome arrives (at most `limit`).
fn next_outcome(saver: &mut Saver, limit: Duration) -> wave_ckpt::SaveOutcome {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(o) = saver.poll().into_iter().next() {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "no save finished within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Calls `try_submit` and checks it returned at once.
fn try_submit_now(saver: &mut Saver, step: u64) -> Submitted {
    let objects = objects(step, 200_000);
    let started = Instant::now();
    let answer = saver
        .try_submit(step, objects, serde_json::json!({}))
        .expect("try_submit");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "try_submit of step {step} waited {:?}",
        started.elapsed()
    );
    answer
}

#[test]
fn against_a_store_that_never_answers_try_submit_never_blocks_and_finish_within_names_what_did_not_land(
) {
    captured_logs();
    let Some(weed) = Weed::start() else { return };
    let proxy = FaultProxy::start(&weed.endpoint);
    let store = open_s3(
        &proxy.endpoint(),
        "wave-test/runs/hang",
        patient_single_attempt(),
    )
    .expect("open");
    let mut saver = Saver::new(
        store.clone(),
        SaverOptions {
            max_in_flight: 2,
            retention: None,
        },
    )
    .expect("saver");
    assert_eq!(try_submit_now(&mut saver, 1), Submitted::Queued);
    let first = next_outcome(&mut saver, Duration::from_secs(30));
    assert!(first.result.is_ok(), "{first:?}");

    proxy.set(Fault::Blackhole);
    assert_eq!(try_submit_now(&mut saver, 2), Submitted::Queued);
    assert_eq!(try_submit_now(&mut saver, 3), Submitted::Queued);
    for step in 4..8 {
        assert_eq!(
            try_submit_now(&mut saver, step),
            Submitted::Busy { in_flight: 2 },
            "step {step}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        saver.poll().is_empty(),
        "nothing lands while the store hangs"
    );
    assert_eq!((saver.in_flight(), saver.pending()), (2, 2));

    let started = Instant::now();
    let report = saver
        .finish_within(Duration::from_secs(2))
        .expect("finish_within");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "finish_within(2 s) returned after {waited:?}"
    );
    assert!(report.outcomes.is_empty(), "{:?}", report.outcomes);
    assert_eq!(report.unfinished, vec![2, 3]);

    // Straight to the server: step 1 is what a resume finds, intact.
    let direct = open_s3(&weed.endpoint, "wave-test/runs/hang", impatient(1)).expect("open");
    assert_eq!(direct.latest().expect("latest"), Some(1));
    direct.verify(1).expect("step 1 verifies");
}

#[test]
fn with_seaweedfs_stopped_try_submit_says_busy_and_saves_land_after_the_restart() {
    captured_logs();
    let Some(mut weed) = Weed::start() else {
        return;
    };
    // ~30 s of retrying (10 attempts, 0.5 s doubling to 4 s), longer than the outage.
    let store = open_s3(&weed.endpoint, "wave-test/runs/stopped", impatient(10)).expect("open");
    let mut saver = Saver::new(
        store.clone(),
        SaverOptions {
            max_in_flight: 1,
            retention: None,
        },
    )
    .expect("saver");
    assert_eq!(try_submit_now(&mut saver, 1), Submitted::Queued);
    assert!(next_outcome(&mut saver, Duration::from_secs(30))
        .result
        .is_ok());

    weed.kill();
    assert_eq!(try_submit_now(&mut saver, 2), Submitted::Queued);
    // A periodic save every 0.5 s for 8 s: every one is turned away at once.
    let down = Instant::now();
    let mut step = 3;
    while down.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            try_submit_now(&mut saver, step),
            Submitted::Busy { in_flight: 1 }
        );
        step += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saver.poll().is_empty(), "step 2 is still being retried");
    weed.restart();
    let second = next_outcome(&mut saver, Duration::from_secs(60));
    assert_eq!(second.step, 2);
    let info = second.result.expect("step 2 lands after the restart");
    assert!(info.attempts > 1, "{info:?}");
    assert_eq!(try_submit_now(&mut saver, step), Submitted::Queued);
    let report = saver
        .finish_within(Duration::from_secs(60))
        .expect("finish_within");
    assert!(report.unfinished.is_empty(), "{report:?}");
    assert_eq!(
        report
            .outcomes
            .iter()
            .map(|o| (o.step, o.result.is_ok()))
            .collect::<Vec<_>>(),
        vec![(step, true)]
    );
    assert_eq!(store.latest().expect("latest"), Some(step));
    for c in store.list().expect("list") {
        assert!(c.committed, "no unfinished leftovers: {c:?}");
        store.verify(c.step).expect("verifies");
    }
}

#[test]
fn saves_ride_out_resets_5xx_and_latency_injected_between_client_and_server() {
    captured_logs();
    let Some(weed) = Weed::start() else { return };
    let proxy = FaultProxy::start(&weed.endpoint);
    let store = open_s3(&proxy.endpoint(), "wave-test/runs/faults", impatient(10)).expect("open");
    let mut saver = Saver::new(store.clone(), SaverOptions::default()).expect("saver");
    let faults = [
        (Fault::Reset, true),
        (Fault::HttpStatus(503), true),
        (Fault::HttpStatus(500), true),
        (Fault::Latency(Duration::from_millis(150)), false),
    ];
    for (step, (fault, transient)) in (1u64..).zip(faults) {
        proxy.set(fault.clone());
        let before = proxy.connections();
        saver
            .submit(step, objects(step, 300_000), serde_json::json!({}))
            .expect("submit");
        if transient {
            std::thread::sleep(Duration::from_millis(1500));
            assert!(
                saver.poll().is_empty(),
                "{fault:?}: nothing lands through the fault"
            );
            proxy.set(Fault::None);
        }
        let outcome = next_outcome(&mut saver, Duration::from_secs(60));
        let info = outcome
            .result
            .unwrap_or_else(|e| panic!("{fault:?}: the save failed: {e}"));
        assert!(
            proxy.connections() > before,
            "{fault:?}: the client went through the proxy"
        );
        eprintln!(
            "{fault:?}: step {step} committed after {} attempt(s) in {:.1} s",
            info.attempts,
            info.elapsed.as_secs_f64()
        );
        assert_eq!(
            store.load(step).expect("load").objects,
            objects(step, 300_000)
        );
    }
    assert!(saver.finish().expect("finish").is_empty());
}
