//! Configuration errors stop inlet at start, naming the key and the fix;
//! secrets are never echoed.

use std::process::Output;

use crate::common::process::inlet;

const GOOD: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "g"
[kafka.properties]
"sasl.password" = "s3cr3t-in-file"
[sources.events]
topics = ["events"]
table = "events"
[tables.events]
uri = "/tmp/inlet-cli-test-table"
schema = "id BIGINT"
"#;

fn check(toml: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    inlet()
        .envs(env.iter().copied())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_good_config_checks_ok() {
    let out = check(GOOD, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn unknown_key_is_named() {
    let out = check(&GOOD.replace("group_id", "group_idd"), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("group_idd"), "{}", stderr(&out));
}

#[test]
fn missing_table_names_the_key_and_the_fix() {
    let out = check(
        &GOOD.replace("table = \"events\"", "table = \"evnts\""),
        &[],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("sources.events.table") && e.contains("define [tables.evnts]"),
        "{e}"
    );
}

#[test]
fn missing_topic_is_named() {
    let out = check(&GOOD.replace("topics = [\"events\"]", ""), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sources.events.topics"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environment_overrides_every_key_and_is_validated() {
    // An override that fixes a broken file…
    let broken = GOOD.replace(
        "bootstrap_servers = \"127.0.0.1:9\"",
        "bootstrap_servers = \"\"",
    );
    assert!(!check(&broken, &[]).status.success());
    let out = check(
        &broken,
        &[("INLET_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // …and one that breaks a good file, named by its key.
    let out = check(GOOD, &[("INLET_FLUSH__MAX_ROWS", "0")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("flush.max_rows"), "{}", stderr(&out));
    // Nested tables and passthrough properties too.
    let out = check(GOOD, &[("INLET_TABLES__EVENTS__SCHEMA", "id BIGNT")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tables.events.schema"),
        "{}",
        stderr(&out)
    );
    let out = check(
        GOOD,
        &[("INLET_KAFKA__PROPERTIES__ENABLE_AUTO_COMMIT", "true")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("enable.auto.commit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_file_is_reported() {
    let out = inlet()
        .args(["check", "-c", "/nonexistent/inlet.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/inlet.toml"));
}

#[test]
fn secrets_are_not_echoed_in_errors() {
    let bad = GOOD.replace("\"s3cr3t-in-file\"", "[\"s3cr3t-in-file\"]");
    let out = check(&bad, &[("INLET_KAFKA__PROPERTIES__SASL_PASSWORD", "[1,2]")]);
    let e = stderr(&out);
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn a_transform_that_cannot_run_fails_check_naming_it() {
    // DataFusion plans `digest` with a per-row algorithm but cannot execute
    // it: `check` tries every transform on a batch of nulls.
    let toml = GOOD.replace(
        "schema = \"id BIGINT\"",
        "schema = \"id BIGINT, algo STRING, h BINARY\"\n\
         [[tables.events.transforms]]\n\
         op = \"derive\"\n\
         column = \"h\"\n\
         expr = \"digest(CAST(id AS STRING), algo)\"",
    );
    let out = check(&toml, &[]);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("tables.events.transforms") && e.contains("transforms[0] (derive)"),
        "{e}"
    );
    // coalesce, which needs DataFusion's simplifier, checks ok.
    let toml = GOOD.replace(
        "schema = \"id BIGINT\"",
        "schema = \"id BIGINT, other BIGINT\"\n\
         [[tables.events.transforms]]\n\
         op = \"derive\"\n\
         column = \"id\"\n\
         expr = \"coalesce(other, id)\"",
    );
    let out = check(&toml, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `inlet check` validates `[schema_registry]` as `run` does, naming the key
/// and the fix (it answered ok for all of these before).
#[test]
fn a_bad_schema_registry_section_fails_the_check_naming_the_key() {
    let with = |section: &str| format!("{GOOD}\n[schema_registry]\n{section}\n");
    let cases = [
        (
            "url = \"ftp://not a url\"\nretry_backoff = \"0s\"",
            "schema_registry.url",
            "http",
        ),
        (
            "url = \"ftp://registry:8081\"",
            "schema_registry.url",
            "http",
        ),
        (
            "url = \"http://registry:8081\"\nretry_backoff = \"0s\"",
            "schema_registry.retry_backoff",
            "500ms",
        ),
        (
            "url = \"http://registry:8081\"\nretry_backoff = \"2s\"\nmax_backoff = \"1s\"",
            "schema_registry.max_backoff",
            "at least",
        ),
        (
            "url = \"http://registry:8081\"\nunknown_id_grace = \"2h\"",
            "schema_registry.unknown_id_grace",
            "60s",
        ),
        (
            "url = \"https://registry:8081\"\nca_location = \"/nonexistent/ca.pem\"",
            "schema_registry.ca_location",
            "PEM",
        ),
    ];
    for (section, key, fix) in cases {
        let out = check(&with(section), &[]);
        let e = stderr(&out);
        assert!(!out.status.success(), "{section}: {e}");
        assert!(e.contains(&format!("`{key}`")), "{section}: {e}");
        assert!(e.contains(fix), "{section}: {e}");
    }
    let out = check(
        &with("url = \"http://registry:8081\"\nunknown_id_grace = \"0s\""),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
