//! Where a replay writes: `--table-uri` and `--quarantine-uri`.
//!
//! A replay into another table must not put its rejected messages into the
//! ingest's quarantine table (that table would then hold those offsets
//! twice, once per app id), so with `--table-uri` a table that has a
//! quarantine needs `--quarantine-uri` too: inlet refuses to guess a
//! location beside the new table.

use crate::config::Config;

/// Points the config's one table (and its quarantine) at the replay's own
/// target. `quarantine_uri` alone moves only the quarantine.
pub fn replay_target(
    cfg: &mut Config,
    table_uri: Option<String>,
    quarantine_uri: Option<String>,
) -> Result<(), String> {
    if table_uri.is_none() && quarantine_uri.is_none() {
        return Ok(());
    }
    if cfg.tables.len() != 1 {
        return Err("--table-uri and --quarantine-uri need a config with exactly one table".into());
    }
    let Some((name, t)) = cfg.tables.iter_mut().next() else {
        return Err("the config has no table".into());
    };
    for (flag, uri) in [
        ("--table-uri", &table_uri),
        ("--quarantine-uri", &quarantine_uri),
    ] {
        if let Some(uri) = uri {
            crate::config::uri::check_uri(uri).map_err(|e| format!("{flag} `{uri}`: {e}"))?;
        }
    }
    if table_uri.is_some() && t.quarantine_uri.is_some() && quarantine_uri.is_none() {
        return Err(format!(
            "--table-uri writes the replay into another table, but tables.{name} has a quarantine \
             table (`quarantine_uri`), which belongs to the ingest: give the replay's rejected \
             messages a quarantine of their own with --quarantine-uri"
        ));
    }
    let uri = table_uri.unwrap_or_else(|| t.uri.clone());
    let quarantine = quarantine_uri.or_else(|| t.quarantine_uri.clone());
    if quarantine.as_deref().map(str::trim) == Some(uri.trim()) {
        return Err("--quarantine-uri must differ from the table's location".into());
    }
    t.uri = uri;
    t.quarantine_uri = quarantine;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(quarantine: bool) -> Config {
        let q = if quarantine {
            r#"quarantine_uri = "/lake/events_q""#
        } else {
            ""
        };
        crate::config::load_str(&format!(
            r#"
            [kafka]
            bootstrap_servers = "127.0.0.1:1"
            group_id = "g"
            [sources.events]
            topics = ["events"]
            table = "events"
            [tables.events]
            uri = "/lake/events"
            schema = "id BIGINT"
            {q}
            "#
        ))
        .unwrap()
    }

    #[test]
    fn another_table_needs_a_quarantine_of_its_own() {
        let mut cfg = config(true);
        let e = replay_target(&mut cfg, Some("/other/events".into()), None).unwrap_err();
        assert!(e.contains("--quarantine-uri"), "{e}");
        assert_eq!(cfg.tables["events"].uri, "/lake/events", "nothing changed");

        replay_target(
            &mut cfg,
            Some("/other/events".into()),
            Some("/other/events_q".into()),
        )
        .unwrap();
        assert_eq!(cfg.tables["events"].uri, "/other/events");
        assert_eq!(
            cfg.tables["events"].quarantine_uri.as_deref(),
            Some("/other/events_q")
        );
    }

    #[test]
    fn without_a_configured_quarantine_the_table_uri_is_enough() {
        let mut cfg = config(false);
        replay_target(&mut cfg, Some("/other/events".into()), None).unwrap();
        assert_eq!(cfg.tables["events"].uri, "/other/events");
        assert_eq!(cfg.tables["events"].quarantine_uri, None);
        let e = replay_target(&mut cfg, None, Some("/other/events".into())).unwrap_err();
        assert!(e.contains("must differ"), "{e}");
        let e = replay_target(&mut cfg, Some("hdfs://x/y".into()), None).unwrap_err();
        assert!(e.contains("--table-uri"), "{e}");
    }
}
