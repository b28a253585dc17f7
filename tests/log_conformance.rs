//! The event store conformance suite, run against every store implementation.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use casebook::log::{
    Direction, ExpectedVersion, GlobalPosition, LogError, RecordedEvent, StreamVersion,
    Subscription, SubscriptionStart,
};
use common::*;

async fn payloads(events: &[RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

async fn collect(sub: &mut Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("subscription stalled")
            .expect("subscription error");
        out.push(e);
    }
    out
}

pub async fn appends_and_reads_streams(f: Fixture) {
    let s = stream("kent", "C-1");
    let first = events("a", 3);
    let r = f
        .store
        .append(&s, ExpectedVersion::NoStream, first.clone())
        .await
        .unwrap();
    assert_eq!(
        (r.first_position, r.last_position, r.version),
        (GlobalPosition(0), GlobalPosition(2), StreamVersion(2))
    );
    let r = f
        .store
        .append(&s, ExpectedVersion::Exact(StreamVersion(2)), events("b", 2))
        .await
        .unwrap();
    assert_eq!(
        (r.first_position, r.last_position, r.version),
        (GlobalPosition(3), GlobalPosition(4), StreamVersion(4))
    );

    let all = f
        .store
        .read_stream(&s, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap();
    assert_eq!(payloads(&all).await, ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.version, StreamVersion(i as u64));
        assert_eq!(e.position, GlobalPosition(i as u64));
        assert_eq!(e.stream, s);
        assert_eq!(
            *e.metadata,
            meta().with_correlation(e.metadata.correlation_id)
        );
    }
    assert!(all[0].same_data(&first[0]));
    assert!(all.windows(2).all(|w| w[0].recorded <= w[1].recorded));

    let mid = f
        .store
        .read_stream(&s, Direction::Forward, StreamVersion(1), 2)
        .await
        .unwrap();
    assert_eq!(payloads(&mid).await, ["a-1", "a-2"]);
    let back = f
        .store
        .read_stream(&s, Direction::Backward, StreamVersion::END, 2)
        .await
        .unwrap();
    assert_eq!(payloads(&back).await, ["b-1", "b-0"]);
    let back = f
        .store
        .read_stream(&s, Direction::Backward, StreamVersion(1), 10)
        .await
        .unwrap();
    assert_eq!(payloads(&back).await, ["a-1", "a-0"]);
    let past = f
        .store
        .read_stream(&s, Direction::Forward, StreamVersion(9), 10)
        .await
        .unwrap();
    assert!(past.is_empty());
    let unknown = f
        .store
        .read_stream(
            &stream("kent", "nope"),
            Direction::Forward,
            StreamVersion::START,
            10,
        )
        .await
        .unwrap();
    assert!(unknown.is_empty());
    assert_eq!(
        f.store.stream_version(&s).await.unwrap(),
        Some(StreamVersion(4))
    );
    assert_eq!(
        f.store
            .stream_version(&stream("kent", "nope"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(f.store.head_position(), Some(GlobalPosition(4)));
}

pub async fn expected_version_conflicts_append_nothing(f: Fixture) {
    let s = stream("kent", "C-2");
    let err = f
        .store
        .append(&s, ExpectedVersion::StreamExists, events("x", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::WrongExpectedVersion { actual: None, .. }),
        "{err}"
    );
    let err = f
        .store
        .append(&s, ExpectedVersion::Exact(StreamVersion(0)), events("x", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::WrongExpectedVersion { actual: None, .. }),
        "{err}"
    );
    f.store
        .append(&s, ExpectedVersion::NoStream, events("a", 2))
        .await
        .unwrap();
    let err = f
        .store
        .append(&s, ExpectedVersion::NoStream, events("x", 1))
        .await
        .unwrap_err();
    match &err {
        LogError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, &s);
            assert_eq!(*expected, ExpectedVersion::NoStream);
            assert_eq!(*actual, Some(StreamVersion(1)));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("version 1"), "{err}");
    let err = f
        .store
        .append(&s, ExpectedVersion::Exact(StreamVersion(0)), events("x", 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LogError::WrongExpectedVersion {
            actual: Some(StreamVersion(1)),
            ..
        }
    ));
    f.store
        .append(&s, ExpectedVersion::StreamExists, events("b", 1))
        .await
        .unwrap();
    f.store
        .append(&s, ExpectedVersion::Any, events("c", 1))
        .await
        .unwrap();
    let all = f
        .store
        .read_stream(&s, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap();
    assert_eq!(payloads(&all).await, ["a-0", "a-1", "b-0", "c-0"]);
    assert_eq!(f.store.head_position(), Some(GlobalPosition(3)));
}

pub async fn concurrent_writers_to_one_stream_conflict_cleanly(f: Fixture) {
    let s = stream("kent", "C-3");
    f.store
        .append(&s, ExpectedVersion::NoStream, events("seed", 1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = Arc::clone(&f.store);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0;
            for round in 0..10 {
                loop {
                    let v = store.stream_version(&s).await.unwrap().unwrap();
                    match store
                        .append(
                            &s,
                            ExpectedVersion::Exact(v),
                            events(&format!("w{w}r{round}"), 1),
                        )
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.version, v.next());
                            wins += 1;
                            break;
                        }
                        Err(LogError::WrongExpectedVersion {
                            actual: Some(a), ..
                        }) => assert!(a > v),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            wins
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 160);
    let all = f
        .store
        .read_stream(&s, Direction::Forward, StreamVersion::START, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 161);
    let distinct: BTreeSet<_> = payloads(&all).await.into_iter().collect();
    assert_eq!(distinct.len(), 161, "every append landed exactly once");
}

pub async fn appends_are_idempotent_by_event_id(f: Fixture) {
    let s = stream("kent", "C-4");
    let batch = events("a", 3);
    let original = f
        .store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    f.store
        .append(&s, ExpectedVersion::Any, events("b", 1))
        .await
        .unwrap();
    // The same ids again (even with a stale expected version) return the original result.
    let again = f
        .store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, original);
    let again = f
        .store
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, original);
    assert_eq!(
        f.store.stream_version(&s).await.unwrap(),
        Some(StreamVersion(3))
    );

    // A reused id with different content is an error.
    let mut changed = batch.clone();
    changed[1].payload = b"tampered".to_vec();
    let err = f
        .store
        .append(&s, ExpectedVersion::Any, changed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::EventIdConflict { event_id, .. } if event_id == batch[1].id),
        "{err}"
    );
    // Some ids stored, some new.
    let mut mixed = vec![batch[0].clone()];
    mixed.extend(events("new", 1));
    let err = f
        .store
        .append(&s, ExpectedVersion::Any, mixed)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::EventIdConflict { .. }), "{err}");
    // The same ids in another stream.
    let err = f
        .store
        .append(
            &stream("kent", "other"),
            ExpectedVersion::Any,
            batch.clone(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kent/case/C-4"), "{err}");
    // The same id twice in one append.
    let e = event("twice");
    let err = f
        .store
        .append(&s, ExpectedVersion::Any, vec![e.clone(), e.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::DuplicateEventId { event_id } if event_id == e.id));
    assert_eq!(
        f.store.stream_version(&s).await.unwrap(),
        Some(StreamVersion(3))
    );
    assert_eq!(f.store.head_position(), Some(GlobalPosition(3)));

    // Concurrent retries of one append land once.
    let retry = events("retry", 2);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, s, retry) = (Arc::clone(&f.store), s.clone(), retry.clone());
        tasks.push(tokio::spawn(async move {
            store.append(&s, ExpectedVersion::Any, retry).await.unwrap()
        }));
    }
    let mut results = BTreeSet::new();
    for t in tasks {
        results.insert(t.await.unwrap().first_position);
    }
    assert_eq!(results.len(), 1);
    assert_eq!(
        f.store.stream_version(&s).await.unwrap(),
        Some(StreamVersion(5))
    );
}

pub async fn global_order_is_gap_free_across_streams(f: Fixture) {
    let t = tenant("kent");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let s = stream("kent", &format!("W{w}"));
                store
                    .append(
                        &s,
                        ExpectedVersion::Any,
                        events(&format!("w{w}-{i}"), 1 + i % 3),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = Vec::new();
    let mut from = GlobalPosition::START;
    loop {
        let page = f.store.read_all(&t, from, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.position.next();
        all.extend(page);
    }
    let expected: usize = 8 * (0..25).map(|i| 1 + i % 3).sum::<usize>();
    assert_eq!(all.len(), expected);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, GlobalPosition(i as u64), "gap-free, in order");
    }
    // Per stream, versions follow global order.
    let mut last: HashMap<_, u64> = HashMap::new();
    for e in &all {
        let v = last.entry(e.stream.clone()).or_insert(0);
        assert_eq!(e.version.0, *v);
        *v += 1;
    }
    // Reading from the middle of a multi-event append starts exactly there.
    let mid = f.store.read_all(&t, GlobalPosition(5), 3).await.unwrap();
    assert_eq!(
        mid.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert!(f
        .store
        .read_all(&t, GlobalPosition(expected as u64), 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn read_limits_are_checked(f: Fixture) {
    let s = stream("kent", "C-5");
    let max = f.store.limits().max_read_limit;
    for limit in [0, max + 1] {
        let err = f
            .store
            .read_stream(&s, Direction::Forward, StreamVersion::START, limit)
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::InvalidLimit { .. }), "{err}");
        let err = f
            .store
            .read_all(&tenant("kent"), GlobalPosition::START, limit)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&format!("1 to {max}")), "{err}");
    }
}

pub async fn bad_appends_are_rejected_whole(f: Fixture) {
    let s = stream("kent", "C-6");
    let limits = f.store.limits();
    let err = f
        .store
        .append(&s, ExpectedVersion::Any, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::EmptyAppend { .. }), "{err}");
    let err = f
        .store
        .append(
            &s,
            ExpectedVersion::Any,
            events("n", limits.max_events_per_append + 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::TooManyEvents { .. }), "{err}");
    let mut big = events("ok", 2);
    big[1].payload = vec![7; limits.max_event_size];
    let err = f
        .store
        .append(&s, ExpectedVersion::Any, big.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::EventTooLarge { event_id, .. } if event_id == big[1].id),
        "{err}"
    );
    let mut untyped = events("ok", 1);
    untyped[0].event_type.clear();
    let err = f
        .store
        .append(&s, ExpectedVersion::Any, untyped)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::InvalidEventType { .. }), "{err}");
    assert_eq!(f.store.stream_version(&s).await.unwrap(), None);
    assert_eq!(f.store.head_position(), None);
    // The largest allowed event is fine.
    let mut largest = events("max", 1);
    let overhead = largest[0].size();
    largest[0].payload = vec![1; limits.max_event_size - overhead];
    f.store
        .append(&s, ExpectedVersion::NoStream, largest)
        .await
        .unwrap();
    let read = f
        .store
        .read_stream(&s, Direction::Forward, StreamVersion::START, 1)
        .await
        .unwrap();
    assert_eq!(read[0].payload.len(), limits.max_event_size - overhead);
}

pub async fn tenants_are_isolated(f: Fixture) {
    let kent = stream("kent", "C-7");
    let essex = stream("essex", "C-7");
    f.store
        .append(&kent, ExpectedVersion::NoStream, events("kent", 2))
        .await
        .unwrap();
    // Same category and id, other tenant: a different stream.
    f.store
        .append(&essex, ExpectedVersion::NoStream, events("essex", 3))
        .await
        .unwrap();
    assert_eq!(
        f.store.stream_version(&kent).await.unwrap(),
        Some(StreamVersion(1))
    );
    assert_eq!(
        f.store.stream_version(&essex).await.unwrap(),
        Some(StreamVersion(2))
    );
    let k = f
        .store
        .read_all(&tenant("kent"), GlobalPosition::START, 100)
        .await
        .unwrap();
    assert_eq!(payloads(&k).await, ["kent-0", "kent-1"]);
    let e = f
        .store
        .read_all(&tenant("essex"), GlobalPosition::START, 100)
        .await
        .unwrap();
    assert!(e.iter().all(|e| e.tenant() == &tenant("essex")));
    assert_eq!(e.len(), 3);
    assert!(f
        .store
        .read_all(&tenant("surrey"), GlobalPosition::START, 100)
        .await
        .unwrap()
        .is_empty());
    let mut sub = f
        .store
        .subscribe_all(tenant("kent"), SubscriptionStart::Beginning)
        .await
        .unwrap();
    let got = collect(&mut sub, 2).await;
    assert!(got.iter().all(|e| e.tenant() == &tenant("kent")));
    f.store
        .append(&essex, ExpectedVersion::Any, events("essex-live", 5))
        .await
        .unwrap();
    f.store
        .append(&kent, ExpectedVersion::Any, events("kent-live", 1))
        .await
        .unwrap();
    let next = collect(&mut sub, 1).await;
    assert_eq!(payloads(&next).await, ["kent-live-0"]);
    assert!(
        sub.try_next().await.unwrap().is_none(),
        "nothing of essex leaks"
    );
}

/// Subscriptions from the beginning, the middle and the end, while writers append.
pub async fn subscriptions_switch_to_live_without_gaps_or_duplicates(f: Fixture) {
    let t = tenant("kent");
    for i in 0..50 {
        f.store
            .append(
                &stream("kent", &format!("pre{}", i % 5)),
                ExpectedVersion::Any,
                events("pre", 2),
            )
            .await
            .unwrap();
        f.store
            .append(
                &stream("essex", "noise"),
                ExpectedVersion::Any,
                events("noise", 1),
            )
            .await
            .unwrap();
    }
    let kent_before = f
        .store
        .read_all(&t, GlobalPosition::START, 1000)
        .await
        .unwrap();
    assert_eq!(kent_before.len(), 100);
    let middle = kent_before[49].position;
    let mut from_start = f
        .store
        .subscribe_all(t.clone(), SubscriptionStart::Beginning)
        .await
        .unwrap()
        .with_page_size(16);
    let mut from_middle = f
        .store
        .subscribe_all(t.clone(), SubscriptionStart::After(middle))
        .await
        .unwrap();
    let mut from_end = f
        .store
        .subscribe_all(t.clone(), SubscriptionStart::End)
        .await
        .unwrap();
    let stream_sub_target = stream("kent", "W0");
    let mut on_stream = f
        .store
        .subscribe_stream(stream_sub_target.clone(), SubscriptionStart::Beginning)
        .await
        .unwrap();

    let writers = 6;
    let per_writer = 40;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                store
                    .append(
                        &stream("kent", &format!("W{w}")),
                        ExpectedVersion::Any,
                        events(&format!("w{w}-{i}"), 1),
                    )
                    .await
                    .unwrap();
                store
                    .append(
                        &stream("essex", &format!("W{w}")),
                        ExpectedVersion::Any,
                        events("noise", 1),
                    )
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let live = writers * per_writer;
    let (a, b, c, d) = tokio::join!(
        collect(&mut from_start, 100 + live),
        collect(&mut from_middle, 50 + live),
        collect(&mut from_end, live),
        collect(&mut on_stream, per_writer),
    );
    for t in tasks {
        t.await.unwrap();
    }
    for (name, got) in [("start", &a), ("middle", &b), ("end", &c)] {
        assert!(
            got.windows(2).all(|w| w[0].position < w[1].position),
            "{name}: strictly increasing"
        );
        assert!(got.iter().all(|e| e.tenant() == &t), "{name}: tenant only");
    }
    let all_kent = f
        .store
        .read_all(&t, GlobalPosition::START, 10_000)
        .await
        .unwrap();
    let positions = |v: &[RecordedEvent]| v.iter().map(|e| e.position).collect::<Vec<_>>();
    assert_eq!(
        positions(&a),
        positions(&all_kent),
        "from start: exactly every event"
    );
    assert_eq!(
        positions(&b),
        positions(&all_kent[50..]),
        "from middle: exactly the rest"
    );
    assert_eq!(
        positions(&c),
        positions(&all_kent[100..]),
        "from end: exactly the live ones"
    );
    assert_eq!(
        d.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        (0..per_writer as u64).collect::<Vec<_>>()
    );
    assert!(d.iter().all(|e| e.stream == stream_sub_target));
    // Caught up: nothing more.
    assert!(from_start.try_next().await.unwrap().is_none());
    // A stream subscription from its end sees only later events.
    let mut stream_end = f
        .store
        .subscribe_stream(stream_sub_target.clone(), SubscriptionStart::End)
        .await
        .unwrap();
    f.store
        .append(&stream_sub_target, ExpectedVersion::Any, events("after", 1))
        .await
        .unwrap();
    let e = collect(&mut stream_end, 1).await;
    assert_eq!(e[0].version, StreamVersion(per_writer as u64));
    let mut stream_after = f
        .store
        .subscribe_stream(
            stream_sub_target.clone(),
            SubscriptionStart::After(StreamVersion(38)),
        )
        .await
        .unwrap();
    let e = collect(&mut stream_after, 2).await;
    assert_eq!(e.iter().map(|e| e.version.0).collect::<Vec<_>>(), [39, 40]);
}

/// A slow consumer does not hold up writers or other consumers.
pub async fn slow_subscribers_do_not_block_writers(f: Fixture) {
    let t = tenant("kent");
    let mut slow = f
        .store
        .subscribe_all(t.clone(), SubscriptionStart::Beginning)
        .await
        .unwrap()
        .with_page_size(4);
    let mut fast = f
        .store
        .subscribe_all(t.clone(), SubscriptionStart::Beginning)
        .await
        .unwrap();
    for i in 0..200 {
        f.store
            .append(
                &stream("kent", "busy"),
                ExpectedVersion::Any,
                events(&format!("e{i}"), 1),
            )
            .await
            .unwrap();
    }
    let got = collect(&mut fast, 200).await;
    assert_eq!(got.len(), 200);
    let first = collect(&mut slow, 3).await;
    assert_eq!(
        first.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let rest = collect(&mut slow, 197).await;
    assert_eq!(rest.last().unwrap().position, GlobalPosition(199));
}

/// Pages of thousands of events, from any position (mid-append too), hold
/// exactly the tenant's events in order with their content, whether read as
/// owned events or as a batch visited in place.
pub async fn bulk_reads_are_complete_and_ordered(f: Fixture) {
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            let mut appended = Vec::new();
            for a in 0..400u64 {
                let tenant = if (w + a) % 3 == 0 { "avon" } else { "kent" };
                let s = stream(tenant, &format!("B-{w}-{}", a % 7));
                let n = 1 + ((w * 7 + a) % 9) as usize;
                let batch = events(&format!("{tenant}-{w}-{a}"), n);
                let r = store
                    .append(&s, ExpectedVersion::Any, batch.clone())
                    .await
                    .unwrap();
                appended.push((tenant, r.first_position, batch));
            }
            appended
        }));
    }
    let mut kent = Vec::new();
    for t in tasks {
        for (tenant, first, batch) in t.await.unwrap() {
            if tenant == "kent" {
                for (i, e) in batch.into_iter().enumerate() {
                    kent.push((first.0 + i as u64, e));
                }
            }
        }
    }
    kent.sort_by_key(|(p, _)| *p);
    assert!(kent.len() > 4096 * 2, "{} events", kent.len());
    let max = f.store.limits().max_read_limit;
    for (start, limit) in [
        (0, max),
        (1, 4500),
        (kent[4000].0 + 1, 4097),
        (kent[10].0, 50),
    ] {
        let page = f
            .store
            .read_all(&tenant("kent"), GlobalPosition(start), limit)
            .await
            .unwrap();
        let expected: Vec<_> = kent
            .iter()
            .filter(|(p, _)| *p >= start)
            .take(limit)
            .collect();
        assert_eq!(page.len(), expected.len(), "from {start}, limit {limit}");
        for (got, (position, data)) in page.iter().zip(&expected) {
            assert_eq!(got.position.0, *position);
            assert!(got.same_data(data), "event at {position}");
        }
        // The same page as a batch decoded while visited.
        let batch = f
            .store
            .read_all_batch(&tenant("kent"), GlobalPosition(start), limit)
            .await
            .unwrap();
        assert_eq!(batch.len(), page.len());
        assert_eq!(batch.last_position(), page.last().map(|e| e.position));
        let mut visited = 0;
        for (got, want) in batch.iter().zip(&page) {
            assert_eq!(got.position(), want.position);
            assert_eq!(got.version(), want.version);
            assert_eq!(got.stream(), &want.stream);
            assert_eq!(got.recorded(), want.recorded);
            assert_eq!((got.id(), got.event_type()), (want.id, &*want.event_type));
            assert_eq!(
                (got.payload(), got.metadata()),
                (&want.payload[..], &*want.metadata)
            );
            assert_eq!(&got.to_recorded(), want);
            visited += 1;
        }
        assert_eq!(visited, page.len());
        assert_eq!(batch.into_events(), page);
    }
    // Paging through all of it gives every event once.
    let mut from = GlobalPosition::START;
    let mut seen = 0;
    loop {
        let page = f.store.read_all(&tenant("kent"), from, 3000).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.iter().all(|e| e.tenant() == &tenant("kent")));
        assert_eq!(page[0].position.0, kent[seen].0);
        seen += page.len();
        from = last.position.next();
    }
    assert_eq!(seen, kent.len());
}

/// Written appends take their place in the stream's versions and the
/// global order like any other, conflict like any other, and read back once
/// synced.
pub async fn written_appends_read_back_once_synced(f: Fixture) {
    let audit = stream("kent", "A-1");
    let case = stream("kent", "C-1");
    let w = f
        .store
        .append_written(&audit, ExpectedVersion::NoStream, events("w", 2))
        .await
        .unwrap();
    assert_eq!(
        (w.first_position, w.version),
        (GlobalPosition(0), StreamVersion(1))
    );
    let c = f
        .store
        .append(&case, ExpectedVersion::NoStream, events("c", 1))
        .await
        .unwrap();
    assert_eq!(c.first_position, GlobalPosition(2));
    let conflict = f
        .store
        .append_written(&audit, ExpectedVersion::NoStream, events("x", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, LogError::WrongExpectedVersion { .. }),
        "{conflict}"
    );
    let w2 = f
        .store
        .append_written(
            &audit,
            ExpectedVersion::Exact(StreamVersion(1)),
            events("v", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        (w2.first_position, w2.version),
        (GlobalPosition(3), StreamVersion(2))
    );
    f.store.sync_written().await.unwrap();
    let read = f
        .store
        .read_stream(&audit, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap();
    assert_eq!(payloads(&read).await, ["w-0", "w-1", "v-0"]);
    let all = f
        .store
        .read_all(&tenant("kent"), GlobalPosition::START, 100)
        .await
        .unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, [0, 1, 2, 3]);
}

/// Positions and versions at the very end of their range read and
/// subscribe to nothing: `After(u64::MAX)` must not wrap around to the
/// first event.
pub async fn reads_and_subscriptions_after_the_last_possible_position_find_nothing(f: Fixture) {
    let s = stream("kent", "C-MAX");
    f.store
        .append(&s, ExpectedVersion::Any, events("m", 3))
        .await
        .unwrap();
    let t = tenant("kent");
    let max = GlobalPosition(u64::MAX);
    let top = StreamVersion(u64::MAX);
    assert!(f.store.read_all(&t, max, 10).await.unwrap().is_empty());
    assert!(f
        .store
        .read_stream(&s, Direction::Forward, top, 10)
        .await
        .unwrap()
        .is_empty());
    let backward = f
        .store
        .read_stream(&s, Direction::Backward, top, 10)
        .await
        .unwrap();
    assert_eq!(payloads(&backward).await, ["m-2", "m-1", "m-0"]);
    let mut all = f
        .store
        .subscribe_all(t.clone(), SubscriptionStart::After(max))
        .await
        .unwrap();
    let mut one = f
        .store
        .subscribe_stream(s.clone(), SubscriptionStart::After(top))
        .await
        .unwrap();
    f.store
        .append(&s, ExpectedVersion::Any, events("n", 1))
        .await
        .unwrap();
    for sub in [&mut all, &mut one] {
        assert!(sub.try_next().await.unwrap().is_none());
        let waited = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
        assert!(
            waited.is_err(),
            "delivered {:?}",
            waited.map(|e| e.map(|e| e.position))
        );
    }
}

macro_rules! conformance {
    ($store:ident, $fixture:expr) => {
        mod $store {
            conformance!(@tests $fixture,
                appends_and_reads_streams,
                expected_version_conflicts_append_nothing,
                concurrent_writers_to_one_stream_conflict_cleanly,
                appends_are_idempotent_by_event_id,
                global_order_is_gap_free_across_streams,
                read_limits_are_checked,
                bad_appends_are_rejected_whole,
                tenants_are_isolated,
                subscriptions_switch_to_live_without_gaps_or_duplicates,
                slow_subscribers_do_not_block_writers,
                bulk_reads_are_complete_and_ordered,
                written_appends_read_back_once_synced,
                reads_and_subscriptions_after_the_last_possible_position_find_nothing
            );
        }
    };
    (@tests $fixture:expr, $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                // `None`: PostgreSQL is not installed here and this is not CI.
                if let Some(fixture) = $fixture.await {
                    super::$check(fixture).await;
                }
            }
        )*
    };
}

conformance!(memory, async { Some(crate::common::memory().await) });
conformance!(log_store, async { Some(crate::common::log_store().await) });
conformance!(postgres, crate::pg::fixture());
