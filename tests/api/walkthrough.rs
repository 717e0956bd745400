//! The README's walkthrough (`examples/walkthrough.sh`) and the access-control guide's
//! (`examples/walkthrough-access.sh`), run with bash and curl against a fresh server,
//! and the documents that quote them checked to quote them exactly.

use std::path::PathBuf;

use tokio::process::Command;

use crate::common::{TestServer, spawn_server, spawn_server_with};

const ADMIN_TOKEN: &str = "walkthrough-admin-token-0123456789";

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `bash script` against the server; answers its exit status, stdout and stderr.
async fn run(s: &TestServer, script: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_file(script))
        .env("EDDY_URL", &s.base)
        .env_remove("EDDY_ADMIN_TOKEN")
        .env_remove("EDDY_ACCOUNT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run bash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The text between `<!-- begin NAME -->` and `<!-- end NAME -->`, inside its code fence.
fn quoted(doc: &str, name: &str) -> String {
    let text = read(doc);
    let begin = format!("<!-- begin {name} -->\n```sh\n");
    let end = format!("```\n<!-- end {name} -->");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("{doc} has no {begin:?}"))
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("{doc} has no {end:?}"));
    text[start..start + stop].to_owned()
}

#[test]
fn readme_quotes_the_walkthrough_script_exactly() {
    assert_eq!(
        quoted("README.md", "examples/walkthrough.sh"),
        read("examples/walkthrough.sh"),
        "README.md must quote examples/walkthrough.sh as it is"
    );
    assert_eq!(
        quoted(
            "docs/guide/access-control.md",
            "examples/walkthrough-access.sh"
        ),
        read("examples/walkthrough-access.sh"),
        "docs/guide/access-control.md must quote examples/walkthrough-access.sh as it is"
    );
}

#[test]
fn readme_test_command_is_the_one_ci_runs() {
    let readme = read("README.md");
    let ci = read(".ci/run");
    assert!(readme.contains("\n    cargo test --workspace\n"), "README");
    assert!(ci.contains("cargo test --workspace --locked"), ".ci/run");
    assert!(
        readme.contains("\n    cargo run --release -- serve\n"),
        "README"
    );
}

#[tokio::test]
async fn walkthrough_runs_on_a_fresh_server() {
    let s = spawn_server().await;
    let (code, stdout, stderr) =
        run(&s, "examples/walkthrough.sh", &[("EDDY_ACCOUNT", "demo")]).await;
    assert_eq!(
        code, 0,
        "walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for shown in [
        "reducer-index: 4",
        "\"duplicate\":true",
        "export interface Signup",
        "\"instancePath\":\"/age\"",
        "done: everything above is in the account demo",
    ] {
        assert!(stdout.contains(shown), "no {shown:?} in\n{stdout}");
    }
    // what the script made is there, as it said
    let state = s.get_json("/demo/orders('customer-42').sum", 200).await;
    assert_eq!(state.as_f64(), Some(20.0), "{state}");
    let tue = s.get_json("/demo/by-day('tue')", 200).await;
    assert_eq!(tue.as_array().map(Vec::len), Some(2), "{tue}");
    // run again in another account on the same server: it does not depend on a fresh one
    let (code, stdout, stderr) =
        run(&s, "examples/walkthrough.sh", &[("EDDY_ACCOUNT", "demo2")]).await;
    assert_eq!(
        code, 0,
        "second run failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[tokio::test]
async fn walkthrough_stops_at_an_unexpected_answer() {
    let s = spawn_server().await;
    // the account's clicks already hold an event, so the first step answers index 1
    s.post_ok("/taken/clicks", "click", serde_json::json!({}))
        .await;
    let (code, stdout, stderr) =
        run(&s, "examples/walkthrough.sh", &[("EDDY_ACCOUNT", "taken")]).await;
    assert_ne!(code, 0, "stdout:\n{stdout}");
    assert!(stderr.contains("expected \"index\":0"), "stderr: {stderr}");
    assert!(!stdout.contains("done:"), "{stdout}");
}

#[tokio::test]
async fn access_walkthrough_runs_on_a_fresh_server_with_an_admin_token() {
    let s = spawn_server_with(|c| c.admin_token = Some(ADMIN_TOKEN.into())).await;
    let (code, stdout, stderr) = run(
        &s,
        "examples/walkthrough-access.sh",
        &[("EDDY_ADMIN_TOKEN", ADMIN_TOKEN), ("EDDY_ACCOUNT", "shop")],
    )
    .await;
    assert_eq!(
        code, 0,
        "access walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for shown in [" 401", " 403", " 429", "\"key\":\"eddy_", "done:"] {
        assert!(stdout.contains(shown), "no {shown:?} in\n{stdout}");
    }
    // without the token it refuses to start rather than fail half-way
    let (code, _, stderr) = run(&s, "examples/walkthrough-access.sh", &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("EDDY_ADMIN_TOKEN"), "{stderr}");
}
