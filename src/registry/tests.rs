//! The client against the mock registry of `tests/common/registry.rs`.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use serde_json::{json, Value};

use super::mock::{MockRegistry, Outage};
use super::*;
use crate::config::{InvalidKey, RegistryConfig};
use crate::fault::{Classify, Fault};

const PASSWORD: &str = "s3cr3t-pa55";
const WRONG_PASSWORD: &str = "wr0ng-pa55";

fn client(mock: &MockRegistry) -> SchemaRegistry {
    SchemaRegistry::new(&RegistryConfig::new(mock.url())).expect("client")
}

fn client_with(mock: &MockRegistry, edit: impl FnOnce(&mut RegistryConfig)) -> SchemaRegistry {
    let mut cfg = RegistryConfig::new(mock.url());
    edit(&mut cfg);
    SchemaRegistry::new(&cfg).expect("client")
}

fn assert_secret_free(text: &str) {
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(secret), "`{text}` leaks a password");
    }
}

#[test]
fn frames_split_and_join() {
    let framed = frame(0x0102_0304, b"payload");
    assert_eq!(framed[..5], [0, 1, 2, 3, 4]);
    assert_eq!(split_frame(&framed), Ok((0x0102_0304, &b"payload"[..])));
    assert_eq!(split_frame(&frame(7, b"")), Ok((7, &b""[..])));
    assert_eq!(split_frame(b""), Err(FrameError::Empty));
    assert_eq!(split_frame(b"{\"a\":1}"), Err(FrameError::WrongMagic(b'{')));
    assert_eq!(split_frame(&[0, 0, 1]), Err(FrameError::TooShort(3)));
    assert!(FrameError::WrongMagic(0x7b)
        .to_string()
        .contains("wrong magic byte 0x7b (expected 0x00)"));
    assert!(FrameError::TooShort(3)
        .to_string()
        .contains("shorter than the 5-byte header"));
    assert!(FrameError::Empty.to_string().contains("empty"));
}

#[test]
fn config_defaults_and_unknown_keys() {
    let cfg: RegistryConfig = serde_json::from_value(json!({
        "url": "http://localhost:8081",
        "timeout": "2s",
    }))
    .unwrap();
    assert_eq!(cfg.timeout, Duration::from_secs(2));
    assert_eq!(cfg.retry_backoff, Duration::from_millis(500));
    assert_eq!(cfg.max_backoff, Duration::from_secs(30));
    assert!(cfg.username.is_none() && cfg.ca_location.is_none());
    cfg.validate("schema_registry").unwrap();

    let err = serde_json::from_value::<RegistryConfig>(json!({"url": "x", "pasword": "p"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pasword"), "{err}");

    assert_eq!(cfg.unknown_id_grace, Duration::from_secs(60));
    let mut backoff = cfg.backoff();
    let waits: Vec<Duration> = (0..8).map(|_| backoff.next_delay().unwrap()).collect();
    assert_eq!(waits[0], Duration::from_millis(500));
    assert_eq!(waits[2], Duration::from_secs(2));
    assert_eq!(waits[7], Duration::from_secs(30));
}

#[test]
fn config_validation_names_key_and_fix_without_the_password() {
    let check = |edit: &dyn Fn(&mut RegistryConfig), key: &str, problem: &str| {
        let mut cfg = RegistryConfig::new("https://registry:8081/base");
        edit(&mut cfg);
        let err = cfg.validate("schema_registry").unwrap_err();
        let text = err.to_string();
        assert_secret_free(&text);
        assert_secret_free(&format!("{cfg:?}"));
        assert_eq!(err.key, key, "{text}");
        assert!(err.problem.contains(problem), "{text}");
        assert_eq!(
            SchemaRegistry::new(&cfg).unwrap_err().fault(),
            Fault::Operator
        );
    };
    check(
        &|c| c.url = format!("https://user:{PASSWORD}@registry:8081"),
        "schema_registry.url",
        "credentials",
    );
    check(
        &|c| c.url = "registry:8081".into(),
        "schema_registry.url",
        "scheme",
    );
    check(
        &|c| c.url = "not a url".into(),
        "schema_registry.url",
        "not a URL",
    );
    check(
        &|c| c.url = "http://registry:8081/?x=1".into(),
        "schema_registry.url",
        "query",
    );
    check(
        &|c| c.username = Some("user".into()),
        "schema_registry.password",
        "password is not",
    );
    check(
        &|c| c.password = Some(PASSWORD.into()),
        "schema_registry.username",
        "user name is not",
    );
    check(
        &|c| c.certificate_location = Some("/nonexistent/cert.pem".into()),
        "schema_registry.key_location",
        "key is not",
    );
    check(
        &|c| c.ca_location = Some("/nonexistent/ca.pem".into()),
        "schema_registry.ca_location",
        "not a readable file",
    );
    check(
        &|c| {
            c.url = "http://registry:8081".into();
            c.ca_location = Some("/etc/hostname".into());
        },
        "schema_registry.ca_location",
        "http://",
    );
    check(
        &|c| c.timeout = Duration::ZERO,
        "schema_registry.timeout",
        "0",
    );
    check(
        &|c| c.max_backoff = Duration::from_millis(1),
        "schema_registry.max_backoff",
        "shorter",
    );

    let mut cfg = RegistryConfig::new("http://registry:8081");
    cfg.username = Some("user".into());
    cfg.password = Some(PASSWORD.into());
    cfg.validate("schema_registry").unwrap();
    let debug = format!("{cfg:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert_secret_free(&debug);
}

// A CA, and a client certificate it signed with its key as openssl writes it
// (`EC PARAMETERS` before `EC PRIVATE KEY`); valid until 2126.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBhjCCAS2gAwIBAgIUNkiJCKL3nV9SYiINTHjO3nQQBlkwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNaW5sZXQgdGVzdCBDQTAgFw0yNjExMjExODQwMzNaGA8yMTI2
MTAyODE4NDAzM1owGDEWMBQGA1UEAwwNaW5sZXQgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABFaDRe98Njff0LyxGtiH3Ot4m3JLeKq+b4ugiIzIFVcx
M4uCF+5uxTzfBjeDiM4xrbLdt8fP7cy9OHj7giCglwujUzBRMB0GA1UdDgQWBBQp
o7MgLoDAbwUbSgYoIFx8USBCjTAfBgNVHSMEGDAWgBQpo7MgLoDAbwUbSgYoIFx8
USBCjTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCICkcxIWDWsWp
xYZkcvID/bu2o9q1L7/JB8rVzF+ijOR9AiAX9wlI9hWtxS78MBDkE1Vy8x27aDdc
iOrDru7ePPKZCQ==
-----END CERTIFICATE-----
";
const CLIENT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBqDCCAU2gAwIBAgIUc16294Cz8iSCaN6F50PtliViQrowCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNaW5sZXQgdGVzdCBDQTAgFw0yNjExMjExODQ0MThaGA8yMTI2
MTAyODE4NDQxOFowHDEaMBgGA1UEAwwRaW5sZXQgdGVzdCBjbGllbnQwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAT7qVrwRqCr82droMZMQRumBBIqhO4D0TenRd44
0BRmjDAsak0Z379n4ScwKiAiTjT1087tqSLFjlgf9xrKZ9K7o28wbTAJBgNVHRME
AjAAMAsGA1UdDwQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDAjAdBgNVHQ4EFgQU
alYaZQ5aZYflLvVbIrXNoW1otSswHwYDVR0jBBgwFoAUKaOzIC6AwG8FG0oGKCBc
fFEgQo0wCgYIKoZIzj0EAwIDSQAwRgIhANsFHz+OO6juzlmvdedw4PFFVQcwetq2
A7UVc4FZolR+AiEAzWCWEc2OruusdUcmdr+D7g1cqMdLot/FmJ4FP5xPnDc=
-----END CERTIFICATE-----
";
const CLIENT_KEY: &str = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIKF1qsDbmxPFkkPapaJXLOgAjyHVA4wvco91N/IUWjgVoAoGCCqGSM49
AwEHoUQDQgAE+6la8Eagq/Nna6DGTEEbpgQSKoTuA9E3p0XeONAUZowwLGpNGd+/
Z+EnMCogIk409dPO7akixY5YH/caymfSuw==
-----END EC PRIVATE KEY-----
";

// A key that does not belong to CLIENT_PEM (the CA's).
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgqm9PP8esnd4vJA4W
W6c1GWCzc2LNAR7e+rI+8odUnpWhRANCAARWg0XvfDY339C8sRrYh9zreJtyS3iq
vm+LoIiMyBVXMTOLghfubsU83wY3g4jOMa2y3bfHz+3MvTh4+4IgoJcL
-----END PRIVATE KEY-----
";

#[test]
fn tls_files_load_or_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", CA_PEM);
    let cert = write("client.pem", CLIENT_PEM);
    let key = write("client.key", CLIENT_KEY);
    let garbage = write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let empty = write("empty.pem", "nothing here\n");

    let mut cfg = RegistryConfig::new("https://127.0.0.1:1");
    cfg.ca_location = Some(ca.clone());
    cfg.certificate_location = Some(cert.clone());
    cfg.key_location = Some(key.clone());
    SchemaRegistry::new(&cfg).expect("CA and client identity load");

    let key_of = |cfg: &RegistryConfig| match SchemaRegistry::new(cfg) {
        Err(RegistryError::Config(InvalidKey { key, .. })) => key,
        other => panic!("{other:?}"),
    };
    let mut bad = cfg.clone();
    bad.ca_location = Some(garbage);
    assert_eq!(key_of(&bad), "schema_registry.ca_location");
    let mut bad = cfg.clone();
    bad.ca_location = Some(empty.clone());
    assert_eq!(key_of(&bad), "schema_registry.ca_location");
    let mut bad = cfg.clone();
    bad.key_location = Some(cert.clone());
    assert_eq!(key_of(&bad), "schema_registry.key_location");
    let mut bad = cfg.clone();
    bad.key_location = Some(write("other.key", OTHER_KEY));
    assert_eq!(key_of(&bad), "schema_registry.certificate_location");
    let mut bad = cfg.clone();
    bad.certificate_location = Some(empty);
    assert_eq!(key_of(&bad), "schema_registry.certificate_location");
}

#[tokio::test]
async fn fetches_avro_and_json_by_id() {
    let mock = MockRegistry::start();
    let avro = r#"{"type":"record","name":"E","fields":[{"name":"x","type":"long"}]}"#;
    let json_schema = r#"{"type":"object","properties":{"x":{"type":"integer"}}}"#;
    let avro_id = mock.register("e-value", "AVRO", avro, &[]);
    let json_id = mock.register("j-value", "JSON", json_schema, &[]);
    assert_ne!(avro_id, json_id);

    let registry = client(&mock);
    let schema = registry.schema(avro_id).await.unwrap();
    assert_eq!(
        (schema.id, schema.kind, schema.schema.as_str()),
        (avro_id, SchemaKind::Avro, avro)
    );
    assert!(schema.references.is_empty());
    let schema = registry.schema(json_id).await.unwrap();
    assert_eq!(
        (schema.kind, schema.schema.as_str()),
        (SchemaKind::Json, json_schema)
    );
    assert!(schema.avro_self_contained().is_err());
}

#[tokio::test]
async fn unknown_id_is_not_found_and_permanent() {
    let mock = MockRegistry::start();
    let registry = client(&mock);
    let err = registry.schema(99).await.unwrap_err();
    match &err {
        RegistryError::NotFound { code, what, .. } => {
            assert_eq!(*code, 40403);
            assert!(what.contains("99"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // A 404 alone may be a restarting registry's: retried within the grace.
    assert_eq!(err.fault(), Fault::Environment);
    // Not cached: once registered, the id resolves.
    let id = mock.register("s", "AVRO", "\"string\"", &[]);
    assert_eq!(registry.schema(id).await.unwrap().schema, "\"string\"");

    let err = registry.latest("nope").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { code: 40401, .. }),
        "{err}"
    );
    let err = registry.versions("nope").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { code: 40401, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_base_path_is_the_operators_fault() {
    let mock = MockRegistry::start();
    let id = mock.register("s", "AVRO", "\"string\"", &[]);
    let mut cfg = RegistryConfig::new(format!("{}/not-the-registry/", mock.url()));
    cfg.timeout = Duration::from_secs(5);
    let registry = SchemaRegistry::new(&cfg).unwrap();
    let err = registry.schema(id).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Rejected {
                status: 404,
                code: 404,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Operator);
    assert!(err.to_string().contains("schema_registry.url"), "{err}");
    assert_eq!(mock.requests("/not-the-registry/schemas/ids/"), 1);
}

#[tokio::test]
async fn lookups_of_one_id_make_one_request() {
    let mock = MockRegistry::start();
    let id = mock.register(
        "e-value",
        "AVRO",
        r#"{"type":"fixed","name":"F","size":4}"#,
        &[],
    );
    let registry = client(&mock);
    for _ in 0..100 {
        registry.schema(id).await.unwrap();
    }
    assert_eq!(mock.requests("/schemas/ids/"), 1);
    assert_eq!(registry.requests(), 1);
    assert!(format!("{registry:?}").contains("cached_schemas: 1"));
    for _ in 0..3 {
        registry.schema(id + 1).await.unwrap_err();
    }
    assert!(format!("{registry:?}").contains("cached_schemas: 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_id_make_one_request() {
    let mock = MockRegistry::start();
    let id = mock.register("e-value", "AVRO", "\"long\"", &[]);
    let registry = client(&mock);
    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let registry = registry.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..10 {
                    assert_eq!(registry.schema(id).await.unwrap().id, id);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(mock.requests("/schemas/ids/"), 1);
    assert_eq!(registry.requests(), 1);
}

#[tokio::test]
async fn register_is_idempotent_and_ids_are_global() {
    let mock = MockRegistry::start();
    let registry = client(&mock);
    let v1 = r#"{"type":"record","name":"E","fields":[{"name":"x","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"E","fields":[{"name":"x","type":"long"},{"name":"y","type":["null","string"],"default":null}]}"#;
    let subject = "team/orders value";

    let id1 = registry
        .register(subject, SchemaKind::Avro, v1, &[])
        .await
        .unwrap();
    assert_eq!(
        registry
            .register(subject, SchemaKind::Avro, v1, &[])
            .await
            .unwrap(),
        id1
    );
    let id2 = registry
        .register(subject, SchemaKind::Avro, v2, &[])
        .await
        .unwrap();
    assert_ne!(id1, id2);
    // An older version again: its id, no new version.
    assert_eq!(
        registry
            .register(subject, SchemaKind::Avro, v1, &[])
            .await
            .unwrap(),
        id1
    );
    assert_eq!(registry.versions(subject).await.unwrap(), vec![1, 2]);
    // The same schema under another subject: the same global id.
    assert_eq!(
        registry
            .register("other", SchemaKind::Avro, v2, &[])
            .await
            .unwrap(),
        id2
    );
    assert_eq!(registry.versions("other").await.unwrap(), vec![1]);
    // The same text as JSON Schema is another schema.
    let json_id = registry
        .register("other", SchemaKind::Json, v2, &[])
        .await
        .unwrap();
    assert_ne!(json_id, id2);
    assert_eq!(mock.register(subject, "AVRO", v2, &[]), id2);

    let latest = registry.latest(subject).await.unwrap();
    assert_eq!((latest.id, latest.schema.as_str()), (id2, v2));
    let json_latest = registry.latest("other").await.unwrap();
    assert_eq!(
        (json_latest.id, json_latest.kind),
        (json_id, SchemaKind::Json)
    );
    let mut subjects = registry.subjects().await.unwrap();
    subjects.sort();
    assert_eq!(subjects, vec!["other".to_string(), subject.to_string()]);
    // The subject was percent-encoded in the path.
    assert!(mock.requests("/subjects/team%2Forders%20value/versions") >= 4);

    // latest() filled the id cache.
    let before = registry.requests();
    registry.schema(id2).await.unwrap();
    assert_eq!(registry.requests(), before);

    // Registry-side refusals are permanent and not the message's.
    let err = registry
        .register(subject, SchemaKind::Avro, "{not json", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Rejected {
                status: 422,
                code: 42201,
                ..
            }
        ),
        "{err}"
    );
    let missing = SchemaReference {
        name: "com.acme.Gone".into(),
        subject: "gone".into(),
        version: 1,
    };
    let err = registry
        .register(subject, SchemaKind::Avro, "\"string\"", &[missing])
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Rejected { code: 42201, .. }),
        "{err}"
    );
}

const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"com.acme.common","fields":[
    {"name":"street","type":"string"},
    {"name":"country","type":{"type":"enum","name":"Country","symbols":["DE","FR"]}}]}"#;
const CUSTOMER: &str = r#"{"type":"record","name":"Customer","namespace":"com.acme.crm","fields":[
    {"name":"name","type":"string"},
    {"name":"home","type":"com.acme.common.Address"}]}"#;
const SUPPLIER: &str = r#"{"type":"record","name":"com.acme.erp.Supplier","fields":[
    {"name":"code","type":"int"},
    {"name":"office","type":"com.acme.common.Address"}]}"#;
// Customer by short name (same namespace), Supplier by full name; both bring
// Address (a diamond), which the order also uses directly, as it does the
// Country enum that only Address defines.
const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"com.acme.crm","fields":[
    {"name":"id","type":"long"},
    {"name":"customer","type":"Customer"},
    {"name":"supplier","type":["null","com.acme.erp.Supplier"]},
    {"name":"ship_to","type":"com.acme.common.Address"},
    {"name":"origin","type":"com.acme.common.Country"}]}"#;

fn register_order(mock: &MockRegistry) -> u32 {
    mock.register("address", "AVRO", ADDRESS, &[]);
    mock.register(
        "customer",
        "AVRO",
        CUSTOMER,
        &[("com.acme.common.Address", "address", 1)],
    );
    mock.register(
        "supplier",
        "AVRO",
        SUPPLIER,
        &[("com.acme.common.Address", "address", 1)],
    );
    mock.register(
        "orders-value",
        "AVRO",
        ORDER,
        &[
            ("com.acme.crm.Customer", "customer", 1),
            ("com.acme.erp.Supplier", "supplier", 1),
            ("com.acme.common.Address", "address", 1),
        ],
    )
}

/// Named types defined in `schema` (full names, in document order).
fn definitions(schema: &Value, ns: &str, out: &mut Vec<String>) {
    match schema {
        Value::Array(items) => items.iter().for_each(|i| definitions(i, ns, out)),
        Value::Object(obj) => {
            if let Some(Value::String(t)) = obj.get("type") {
                if matches!(t.as_str(), "record" | "enum" | "fixed") {
                    let name = obj["name"].as_str().unwrap();
                    assert!(!name.contains('.'), "normalised to a short name: {name}");
                    let space = obj
                        .get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(ns)
                        .to_string();
                    out.push(if space.is_empty() {
                        name.to_string()
                    } else {
                        format!("{space}.{name}")
                    });
                    for f in obj
                        .get("fields")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        definitions(&f["type"], &space, out);
                    }
                    return;
                }
            }
            for key in ["items", "values", "type"] {
                if let Some(v) = obj.get(key).filter(|v| !v.is_string()) {
                    definitions(v, ns, out);
                }
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn avro_references_become_one_self_contained_schema() {
    let mock = MockRegistry::start();
    let id = register_order(&mock);
    let registry = client(&mock);
    let order = registry.schema(id).await.unwrap();
    assert_eq!(order.references.len(), 3);
    let (reference, customer) = &order.references[0];
    assert_eq!(
        reference,
        &SchemaReference {
            name: "com.acme.crm.Customer".into(),
            subject: "customer".into(),
            version: 1
        }
    );
    assert_eq!(customer.schema, CUSTOMER);
    // The diamond: one fetch of Address, one shared value.
    let via_customer = &customer.references[0].1;
    let via_supplier = &order.references[1].1.references[0].1;
    assert!(Arc::ptr_eq(via_customer, via_supplier));
    assert!(Arc::ptr_eq(via_customer, &order.references[2].1));
    assert_eq!(mock.requests("/subjects/address/versions/1"), 1);
    // References filled the id cache.
    let before = registry.requests();
    registry.schema(via_customer.id).await.unwrap();
    assert_eq!(registry.requests(), before);

    let text = order.avro_self_contained().unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let mut defined = Vec::new();
    definitions(&value, "", &mut defined);
    assert_eq!(
        defined,
        [
            "com.acme.crm.Order",
            "com.acme.crm.Customer",
            "com.acme.common.Address",
            "com.acme.common.Country",
            "com.acme.erp.Supplier",
        ],
        "each type defined once, at its first use: {text}"
    );
    let fields = value["fields"].as_array().unwrap();
    assert_eq!(fields[3]["type"], "com.acme.common.Address");
    assert_eq!(fields[4]["type"], "com.acme.common.Country");
    assert_eq!(
        fields[2]["type"][1]["fields"][1]["type"],
        "com.acme.common.Address"
    );

    // arrow-avro reads Confluent-framed data with it.
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(id), AvroSchema::new(text.clone()))
        .unwrap();
    let mut decoder = ReaderBuilder::new()
        .with_writer_schema_store(store)
        .build_decoder()
        .expect("arrow-avro accepts the self-contained schema");
    let mut body = vec![0x54]; // id 42
    body.extend([0x06, b'A', b'n', b'n', 0x08, b'M', b'a', b'i', b'n', 0x02]); // customer
    body.extend([0x02, 0x0e, 0x08, b'D', b'o', b'c', b'k', 0x00]); // supplier (branch 1)
    body.extend([0x02, b'X', 0x00]); // ship_to
    body.push(0x02); // origin FR
    let message = frame(id, &body);
    assert_eq!(decoder.decode(&message).unwrap(), message.len());
    let batch = decoder.flush().unwrap().expect("one row");
    assert_eq!(batch.num_rows(), 1);
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    assert_eq!(column("id").as_primitive::<Int64Type>().value(0), 42);
    let customer = column("customer");
    let customer = customer.as_struct();
    assert_eq!(
        customer
            .column_by_name("name")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "Ann"
    );
    let supplier = column("supplier");
    let supplier = supplier.as_struct();
    assert!(supplier.is_valid(0));
    assert_eq!(
        supplier
            .column_by_name("code")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        7
    );
    let ship_to = column("ship_to");
    let street = ship_to
        .as_struct()
        .column_by_name("street")
        .unwrap()
        .clone();
    assert_eq!(street.as_string::<i32>().value(0), "X");
}

#[test]
fn avro_recursive_and_null_namespace_types() {
    let node = Arc::new(ResolvedSchema {
        id: 1,
        kind: SchemaKind::Avro,
        schema: r#"{"type":"record","name":"Node","namespace":"com.x","fields":[
            {"name":"value","type":"long"},
            {"name":"next","type":["null","Node"]}]}"#
            .into(),
        references: vec![],
    });
    let money = Arc::new(ResolvedSchema {
        id: 2,
        kind: SchemaKind::Avro,
        schema: r#"{"type":"fixed","name":"Money","size":8}"#.into(),
        references: vec![],
    });
    let reference = |name: &str, subject: &str| SchemaReference {
        name: name.into(),
        subject: subject.into(),
        version: 1,
    };
    let root = ResolvedSchema {
        id: 3,
        kind: SchemaKind::Avro,
        schema: r#"{"type":"record","name":"List","namespace":"com.x","fields":[
            {"name":"head","type":["null","Node"]},
            {"name":"price","type":"Money"},
            {"name":"tail","type":{"type":"array","items":"com.x.Node"}}]}"#
            .into(),
        references: vec![
            (reference("com.x.Node", "node"), node),
            (reference("Money", "money"), money),
        ],
    };
    let text = root.avro_self_contained().unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let head = &value["fields"][0]["type"][1];
    assert_eq!(head["name"], "Node");
    assert_eq!(head["namespace"], "com.x");
    assert_eq!(head["fields"][1]["type"][1], "com.x.Node", "{text}");
    let price = &value["fields"][1]["type"];
    assert_eq!(
        (&price["name"], &price["namespace"]),
        (&json!("Money"), &json!(""))
    );
    assert_eq!(value["fields"][2]["type"]["items"], "com.x.Node");

    // arrow-avro cannot read recursive types (nor can Arrow hold them), but
    // it reads a type of the null namespace inlined into a namespace.
    let priced = ResolvedSchema {
        id: 5,
        kind: SchemaKind::Avro,
        schema: r#"{"type":"record","name":"Priced","namespace":"com.x","fields":[
            {"name":"price","type":"Money"}]}"#
            .into(),
        references: vec![root.references[1].clone()],
    };
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    let text = priced.avro_self_contained().unwrap();
    store
        .set(Fingerprint::Id(5), AvroSchema::new(text))
        .unwrap();
    let mut decoder = ReaderBuilder::new()
        .with_writer_schema_store(store)
        .build_decoder()
        .unwrap();
    decoder
        .decode(&frame(5, &[1, 2, 3, 4, 5, 6, 7, 8]))
        .unwrap();
    let batch = decoder.flush().unwrap().unwrap();
    let price = batch.column(0).as_fixed_size_binary().value(0).to_vec();
    assert_eq!(price, [1, 2, 3, 4, 5, 6, 7, 8]);

    let bad = ResolvedSchema {
        id: 4,
        kind: SchemaKind::Avro,
        schema: r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Missing"}]}"#.into(),
        references: vec![],
    };
    let err = bad.avro_self_contained().unwrap_err();
    assert_eq!(err.fault(), Fault::Message);
    assert!(err.to_string().contains("`Missing`"), "{err}");
    assert!(err.to_string().contains("schema id 4"), "{err}");
}

#[test]
fn avro_without_references_keeps_its_meaning() {
    let schema = ResolvedSchema {
        id: 1,
        kind: SchemaKind::Avro,
        schema: r#"{"type":"record","name":"com.acme.E","fields":[
            {"name":"a","type":{"type":"enum","name":"S","symbols":["X"]}},
            {"name":"b","type":"S"},
            {"name":"c","type":{"type":"map","values":{"type":"long","logicalType":"timestamp-millis"}}}]}"#
            .into(),
        references: vec![],
    };
    let value: Value = serde_json::from_str(&schema.avro_self_contained().unwrap()).unwrap();
    assert_eq!(
        (&value["name"], &value["namespace"]),
        (&json!("E"), &json!("com.acme"))
    );
    assert_eq!(value["fields"][1]["type"], "com.acme.S");
    assert_eq!(
        value["fields"][2]["type"]["values"]["logicalType"],
        "timestamp-millis"
    );
    let plain = ResolvedSchema {
        id: 2,
        kind: SchemaKind::Avro,
        schema: "\"string\"".into(),
        references: vec![],
    };
    assert_eq!(plain.avro_self_contained().unwrap(), "\"string\"");
}

#[tokio::test]
async fn json_schema_references_resolve_by_name() {
    let mock = MockRegistry::start();
    let country = r#"{"type":"string","enum":["DE","FR"]}"#;
    let address = r#"{"type":"object","properties":{"country":{"$ref":"country.json"}}}"#;
    let order = r#"{"type":"object","properties":{"to":{"$ref":"address.json"}}}"#;
    mock.register("country", "JSON", country, &[]);
    mock.register(
        "address",
        "JSON",
        address,
        &[("country.json", "country", 1)],
    );
    let id = mock.register("order", "JSON", order, &[("address.json", "address", 1)]);
    let registry = client(&mock);
    let schema = registry.schema(id).await.unwrap();
    assert_eq!(schema.kind, SchemaKind::Json);
    let found = schema.json_reference("address.json").unwrap();
    assert_eq!(found.schema, address);
    assert_eq!(
        schema
            .json_reference("address.json#/properties/country")
            .unwrap()
            .schema,
        address
    );
    assert_eq!(
        found.json_reference("country.json").unwrap().schema,
        country
    );
    assert_eq!(
        schema.json_reference("country.json").unwrap().schema,
        country
    );
    assert!(schema.json_reference("nope.json").is_none());
}

#[tokio::test]
async fn basic_auth_and_secret_free_errors() {
    let mock = MockRegistry::start_with_basic_auth("inlet", PASSWORD);
    let id = mock.register("s", "AVRO", "\"string\"", &[]);
    let registry = client_with(&mock, |c| {
        c.username = Some("inlet".into());
        c.password = Some(PASSWORD.into());
        c.timeout = Duration::from_millis(500);
    });
    assert_eq!(registry.schema(id).await.unwrap().schema, "\"string\"");
    assert_secret_free(&format!("{registry:?}"));
    assert!(format!("{registry:?}").contains("<redacted>"));

    let mut errors = Vec::new();
    let wrong = client_with(&mock, |c| {
        c.username = Some("inlet".into());
        c.password = Some(WRONG_PASSWORD.into());
    });
    let err = wrong.schema(id).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Operator);
    assert!(
        err.to_string().contains("schema_registry.password"),
        "{err}"
    );
    errors.push(err);
    let err = client(&mock).versions("s").await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    errors.push(err);

    errors.push(registry.schema(404).await.unwrap_err());
    errors.push(
        registry
            .register("s", SchemaKind::Avro, "{", &[])
            .await
            .unwrap_err(),
    );
    mock.go_down(Outage::ServerError);
    errors.push(registry.latest("s").await.unwrap_err());
    mock.go_down(Outage::Hang);
    errors.push(registry.latest("s").await.unwrap_err());
    mock.come_back();
    mock.go_down(Outage::Refuse);
    errors.push(registry.latest("s").await.unwrap_err());
    errors.push(wrong.latest("s").await.unwrap_err());
    mock.come_back();
    for err in &errors {
        assert_secret_free(&err.to_string());
        assert_secret_free(&format!("{err:?}"));
    }
    assert_eq!(registry.latest("s").await.unwrap().id, id);
}

async fn assert_unavailable_then_back(mock: &MockRegistry, registry: &SchemaRegistry, how: Outage) {
    // A pooled connection exists before the outage.
    registry.versions("s").await.unwrap();
    mock.go_down(how);
    let err = registry.latest("s").await.unwrap_err();
    assert_eq!(err.fault(), Fault::Environment, "{how:?}: {err}");
    assert!(
        matches!(err, RegistryError::Unavailable { .. }),
        "{how:?}: {err}"
    );
    let second = registry.versions("s").await.unwrap_err();
    assert!(second.is_retryable(), "{how:?}: {second}");
    if how == Outage::Refuse {
        assert!(second.to_string().contains("refused"), "{second}");
    }
    mock.come_back();
    assert_eq!(registry.versions("s").await.unwrap(), vec![1], "{how:?}");
    assert_eq!(registry.latest("s").await.unwrap().schema, "\"string\"");
    eprintln!("{how:?}: {err}");
}

#[tokio::test]
async fn outages_are_transient_and_end() {
    let mock = MockRegistry::start();
    mock.register("s", "AVRO", "\"string\"", &[]);
    let registry = client_with(&mock, |c| c.timeout = Duration::from_millis(300));
    let url = mock.url();

    assert_unavailable_then_back(&mock, &registry, Outage::Refuse).await;
    assert_eq!(mock.url(), url, "the same port");
    assert_unavailable_then_back(&mock, &registry, Outage::ServerError).await;
    assert_unavailable_then_back(&mock, &registry, Outage::Hang).await;

    mock.go_down(Outage::ServerError);
    let err = registry.latest("s").await.unwrap_err();
    assert!(err.to_string().contains("50001"), "{err}");
    mock.come_back();
    mock.go_down(Outage::Hang);
    let err = registry.latest("s").await.unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    mock.come_back();
    mock.go_down(Outage::Refuse);
    let err = registry.latest("s").await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    mock.come_back();
    // A schema not fetched during the outage resolves afterwards.
    let id = mock.register("t", "AVRO", "\"int\"", &[]);
    assert_eq!(registry.schema(id).await.unwrap().schema, "\"int\"");
}

#[tokio::test]
async fn mock_speaks_confluent() {
    let mock = MockRegistry::start();
    let base = mock.register("base", "AVRO", ADDRESS, &[]);
    let id = mock.register("ref", "JSON", "{}", &[("a.json", "base", 1)]);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{}{path}", mock.url());
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
            assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
            let body = r.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)),
            )
        }
    };
    let (status, body) = get(&format!("/schemas/ids/{base}")).await;
    assert_eq!((status, body), (200, json!({ "schema": ADDRESS })));
    let (_, body) = get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(
        body,
        json!({"schema": "{}", "schemaType": "JSON",
               "references": [{"name": "a.json", "subject": "base", "version": 1}]})
    );
    let (_, body) = get(&format!("/schemas/ids/{base}/schema")).await;
    assert_eq!(body, serde_json::from_str::<Value>(ADDRESS).unwrap());
    let (_, body) = get("/subjects/ref/versions/latest").await;
    assert_eq!(body["subject"], "ref");
    assert_eq!(
        (body["version"].as_u64(), body["id"].as_u64()),
        (Some(1), Some(id as u64))
    );
    let (status, body) = get("/subjects/ref/versions/1/schema").await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(get("/subjects").await.1, json!(["base", "ref"]));
    assert_eq!(get("/schemas/ids/77").await.1["error_code"], 40403);
    assert_eq!(get("/subjects/nope/versions").await.1["error_code"], 40401);
    assert_eq!(get("/subjects/ref/versions/2").await.1["error_code"], 40402);
    assert_eq!(get("/subjects/ref/versions/zero").await.0, 422);
    assert_eq!(
        get("/nowhere").await,
        (
            404,
            json!({"error_code": 404, "message": "HTTP 404 Not Found"})
        )
    );
    let r = http
        .post(format!("{}/subjects/x/versions", mock.url()))
        .header("content-type", "text/plain")
        .body(r#"{"schema":"\"int\""}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = http
        .delete(format!("{}/subjects", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[tokio::test]
async fn https_with_the_registrys_ca_works_and_an_untrusted_certificate_is_the_operators_to_fix() {
    let mock = MockRegistry::start_tls();
    assert!(mock.url().starts_with("https://"));
    let id = mock.register("t-value", "AVRO", r#""string""#, &[]);
    let trusted = client_with(&mock, |c| c.ca_location = Some(super::mock::test_ca()));
    let schema = trusted
        .schema(id)
        .await
        .expect("TLS handshake with the test CA");
    assert_eq!(schema.schema, r#""string""#);
    let untrusted = client(&mock);
    let e = untrusted.schema(id).await.unwrap_err();
    assert_eq!(
        e.fault(),
        Fault::Operator,
        "waiting does not fix a certificate: {e}"
    );
    assert!(
        matches!(e, RegistryError::Config(InvalidKey { ref key, .. }) if key == "schema_registry.ca_location"),
        "{e}"
    );
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let mock = MockRegistry::start_mtls();
    let id = mock.register("t-value", "AVRO", r#""string""#, &[]);
    let (cert, key) = super::mock::test_client_identity();
    let with_cert = client_with(&mock, |c| {
        c.ca_location = Some(super::mock::test_ca());
        c.certificate_location = Some(cert);
        c.key_location = Some(key);
    });
    let schema = with_cert
        .schema(id)
        .await
        .expect("handshake with a client certificate");
    assert_eq!(schema.schema, r#""string""#);
    let without = client_with(&mock, |c| c.ca_location = Some(super::mock::test_ca()));
    let e = without.schema(id).await.unwrap_err();
    assert_eq!(e.fault(), Fault::Operator, "{e}");
    assert!(
        matches!(e, RegistryError::Config(InvalidKey { ref key, .. }) if key == "schema_registry.certificate_location"),
        "{e}"
    );
}
