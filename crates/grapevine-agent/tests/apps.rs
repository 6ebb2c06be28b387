//! The applications' HTTP API on two agents: ownership claims, schema versions, keyspace
//! convergence and aggregates.

mod common;

use common::{eventually, get, put, Spec};
use serde_json::Value;
use std::time::Duration;

fn json(url: &str) -> Option<Value> {
    get(url).and_then(|b| serde_json::from_str(&b).ok())
}

#[test]
fn ownership_versions_convergence_and_aggregates_over_http() {
    let a = Spec::new("app-a").start();
    let b = Spec::new("app-b").join(a.gossip).start();
    eventually(Duration::from_secs(15), || {
        common::all_alive(&[&a, &b], &["app-a", "app-b"])
    });
    let (ha, hb) = (a.http, b.http);

    // Ownership: a claims 0-99 at epoch 3, b claims 50-149 at epoch 4: b wins the overlap.
    assert_eq!(
        put(
            &format!("http://{ha}/v1/grapevine/ownership/shards?slots=0-99&epoch=3"),
            ""
        ),
        200
    );
    assert_eq!(
        put(
            &format!("http://{hb}/v1/grapevine/ownership/shards?slots=50-149&epoch=4"),
            ""
        ),
        200
    );
    let want = serde_json::json!([
        {"From": 0, "To": 49, "Owner": "app-a", "Epoch": 3, "Addr": a.gossip.to_string()},
        {"From": 50, "To": 149, "Owner": "app-b", "Epoch": 4, "Addr": b.gossip.to_string()},
    ]);
    eventually(Duration::from_secs(10), || {
        [ha, hb].iter().all(|h| {
            json(&format!("http://{h}/v1/grapevine/ownership/shards"))
                .is_some_and(|v| v["Slots"] == want)
        })
    });
    let v = json(&format!("http://{ha}/v1/grapevine/ownership/shards")).unwrap();
    assert_eq!(
        v["Lost"].as_array().map(Vec::len),
        Some(50),
        "a learns it lost 50-99"
    );
    assert_eq!(
        put(
            &format!("http://{ha}/v1/grapevine/ownership/shards?slots=x"),
            ""
        ),
        400
    );
    assert_eq!(
        put(
            &format!("http://{ha}/v1/grapevine/ownership/shards?slots=0-20000"),
            ""
        ),
        400
    );

    // Schema versions: published per agent in its own state.
    for (h, name) in [(ha, "app-a"), (hb, "app-b")] {
        assert_eq!(
            put(
                &format!("http://{h}/v1/grapevine/state/{name}/schema"),
                "42"
            ),
            200
        );
    }
    let v = json(&format!(
        "http://{ha}/v1/grapevine/versions/schema?wait=10s"
    ))
    .unwrap();
    assert_eq!(v["Agreed"], true, "{v}");
    assert_eq!(v["Versions"]["42"], serde_json::json!(["app-a", "app-b"]));
    assert_eq!(
        put(
            &format!("http://{hb}/v1/grapevine/state/app-b/schema"),
            "43"
        ),
        200
    );
    eventually(Duration::from_secs(10), || {
        json(&format!("http://{ha}/v1/grapevine/versions/schema"))
            .is_some_and(|v| v["Agreed"] == false)
    });

    assert_eq!(
        put(
            &format!("http://{ha}/v1/grapevine/ownership/a%2Fb?slots=1-2"),
            ""
        ),
        400
    );

    // Convergence of the keyspace, asked of the agent that wrote (convergence is to the
    // keyspace the asking agent holds); every key says whose write it holds.
    assert_eq!(put(&format!("http://{ha}/v1/kv/cfg/x"), "1"), 200);
    let v = json(&format!("http://{ha}/v1/grapevine/converged?wait=10s")).unwrap();
    assert_eq!(v["Converged"], true, "{v}");
    let kv = json(&format!("http://{hb}/v1/kv/cfg/x")).unwrap();
    assert_eq!(kv[0]["Writer"], "app-a");
    assert!(kv[0]["WrittenAt"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000_000_000));

    // Aggregates: contributions through HTTP, estimates on both.
    assert_eq!(
        put(&format!("http://{ha}/v1/grapevine/aggregate/qps"), "100"),
        200
    );
    assert_eq!(
        put(&format!("http://{hb}/v1/grapevine/aggregate/qps"), "300"),
        200
    );
    assert_eq!(
        put(&format!("http://{hb}/v1/grapevine/aggregate/qps"), "many"),
        400
    );
    eventually(Duration::from_secs(20), || {
        [ha, hb].iter().all(|h| {
            json(&format!("http://{h}/v1/grapevine/aggregate/qps")).is_some_and(|e| {
                e["Average"]
                    .as_f64()
                    .is_some_and(|x| (x - 200.0).abs() < 0.2)
                    && e["Sum"].as_f64().is_some_and(|x| (x - 400.0).abs() < 0.4)
                    && e["Max"] == 300.0
            })
        })
    });
    let all = json(&format!("http://{ha}/v1/grapevine/aggregate")).unwrap();
    assert_eq!(all[0]["Name"], "qps");
}
