//! A throwaway PostgreSQL server per test binary, and a fresh database per test.
//!
//! The server starts once, on first use. Outside CI, a machine without the
//! PostgreSQL server binaries skips the PostgreSQL tests with a message;
//! under `CI=true` that is a failure, so CI never silently skips them.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use casebook::log::pg::{
    PgEventStore, PgStoreConfig, TestCluster, TestClusterError, TestClusterOptions,
};

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

/// The shared test server, or `None` (with a message) if this machine has
/// no PostgreSQL outside CI.
pub async fn cluster() -> Option<&'static TestCluster> {
    let cluster = tokio::task::spawn_blocking(|| {
        CLUSTER.get_or_init(|| {
            TestCluster::start(TestClusterOptions::default()).map_err(|e| match e {
                TestClusterError::NoBinaries
                    if std::env::var("CI").map_or(true, |v| v != "true") =>
                {
                    format!("skip: {e}")
                }
                other => panic!("{other}"),
            })
        })
    })
    .await
    .expect("starting the test server");
    match cluster {
        Ok(c) => Some(c),
        Err(skip) => {
            eprintln!("PostgreSQL test skipped ({skip})");
            None
        }
    }
}

/// A fresh database's URL, or `None` where PostgreSQL tests are skipped.
pub async fn database() -> Option<String> {
    let cluster = cluster().await?;
    Some(
        cluster
            .new_database()
            .await
            .expect("creating a test database"),
    )
}

/// A store on a fresh database with `tune` applied to its settings.
pub async fn store_with(tune: impl FnOnce(&mut PgStoreConfig)) -> Option<(PgEventStore, String)> {
    let url = database().await?;
    let mut config = PgStoreConfig::new(url.clone());
    tune(&mut config);
    let store = PgEventStore::connect(config)
        .await
        .expect("connecting the store");
    Some((store, url))
}

/// A store on a fresh database, as a conformance fixture.
pub async fn fixture() -> Option<crate::common::Fixture> {
    let (store, _) = store_with(|_| {}).await?;
    Some(crate::common::Fixture {
        store: Arc::new(store),
        dir: None,
    })
}
