//! The README's configuration reference is generated from the doc comments
//! of the configuration structs (the structs are the reference, as in
//! Vector), and this test keeps the two equal: it walks the structs from
//! [`Config`](super::Config) with `syn`, one row per key, and compares the
//! table with the README's. After changing a doc comment (or adding a key),
//! regenerate the README's table with
//!
//! ```text
//! INLET_UPDATE_README=1 cargo nextest run --lib config::reference
//! ```
//!
//! Rules the walk enforces, so that the table cannot say less than the code:
//! every key has a doc comment; a key with a default that is not an
//! `Option`, a list or a map says it in a sentence `Default: <value>.` (moved
//! into the table's default column); a key without a default (and not an
//! `Option`) is `required` and says no default; serde attributes the walk does
//! not understand (a rename, a flatten) stop it rather than being misread.

use std::collections::BTreeMap;
use std::path::Path;

/// First line of the generated part of the README.
const BEGIN: &str = "<!-- generated from the doc comments of src/config/*.rs by src/config/reference.rs: edit those, then INLET_UPDATE_README=1 cargo nextest run --lib config::reference -->";
/// Last line of the generated part.
const END: &str = "<!-- end of the generated configuration reference -->";

/// A struct of the configuration: its fields and whether serde fills all of
/// them from `Default` (`#[serde(default)]` on the struct).
struct Section {
    fields: Vec<syn::Field>,
    all_default: bool,
}

/// One row of the table.
struct Row {
    key: String,
    default: String,
    meaning: String,
}

/// The serde attributes of a field or struct the walk understands.
#[derive(Default)]
struct Serde {
    default: bool,
}

fn serde_attrs(attrs: &[syn::Attribute], what: &str) -> Result<Serde, String> {
    let mut out = Serde::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let name = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            match name.as_str() {
                "default" => {
                    out.default = true;
                    if meta.input.peek(syn::Token![=]) {
                        meta.value()?.parse::<syn::LitStr>()?;
                    }
                }
                // How a value is read, not which key it is.
                "with" => {
                    meta.value()?.parse::<syn::LitStr>()?;
                }
                "deny_unknown_fields" => {}
                _ => return Err(meta.error(format!("unknown serde attribute `{name}`"))),
            }
            Ok(())
        })
        .map_err(|e| {
            format!("{what}: {e}: teach src/config/reference.rs what it means for the table")
        })?;
    }
    Ok(out)
}

/// The doc comment's paragraphs, each on one line.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if nv.path.is_ident("doc") {
                if let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) = &nv.value
                {
                    lines.push(s.value().trim().to_string());
                }
            }
        }
    }
    let mut text = String::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&line);
    }
    text
}

/// The last segment of a type path with its generic arguments.
fn segment(ty: &syn::Type) -> Option<(String, Vec<&syn::Type>)> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let args = match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((last.ident.to_string(), args))
}

/// Takes the `Default: <value>.` sentence out of `doc`.
fn take_default(doc: &str) -> Option<(String, String)> {
    let start = doc.find("Default: ")?;
    let rest = &doc[start + "Default: ".len()..];
    let end = rest
        .match_indices('.')
        .map(|(i, _)| i)
        .find(|&i| rest[i + 1..].is_empty() || rest[i + 1..].starts_with(' '))?;
    let value = rest[..end].to_string();
    let meaning = format!("{}{}", &doc[..start], rest[end + 1..].trim_start());
    Some((value, meaning.trim().to_string()))
}

/// The rows of `section`'s keys under `prefix`, recursing into sections.
fn walk(
    sections: &BTreeMap<String, Section>,
    name: &str,
    prefix: &str,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let section = &sections[name];
    for field in &section.fields {
        let ident = field.ident.as_ref().ok_or("tuple struct")?.to_string();
        let key = format!("{prefix}{ident}");
        let serde = serde_attrs(&field.attrs, &key)?;
        let doc = doc_text(&field.attrs);
        if doc.is_empty() {
            return Err(format!(
                "key `{key}` has no doc comment: the doc comment is its reference"
            ));
        }
        let (mut ty_name, mut args) = segment(&field.ty).ok_or(format!("`{key}`: type"))?;
        let optional = ty_name == "Option";
        if optional {
            (ty_name, args) = segment(args[0]).ok_or(format!("`{key}`: type"))?;
        }
        if sections.contains_key(&ty_name) {
            walk(sections, &ty_name, &format!("{key}."), rows)?;
            continue;
        }
        if ty_name == "BTreeMap" {
            if let Some((inner, _)) = segment(args[1]).filter(|(n, _)| sections.contains_key(n)) {
                walk(sections, &inner, &format!("{key}.<name>."), rows)?;
                continue;
            }
        }
        let has_default = serde.default || section.all_default;
        let (default, meaning) = match take_default(&doc) {
            Some(_) if !has_default && !optional => {
                return Err(format!(
                    "key `{key}` is required (no serde default) but its doc names a default"
                ))
            }
            Some(found) => found,
            None if !has_default && !optional => ("required".to_string(), doc),
            None if optional => ("unset".to_string(), doc),
            None if ty_name == "Vec" => ("`[]`".to_string(), doc),
            None if ty_name == "BTreeMap" => ("`{}`".to_string(), doc),
            None => {
                return Err(format!(
                    "key `{key}` has a default but its doc comment does not say it: \
                     add a sentence `Default: <value>.`"
                ))
            }
        };
        rows.push(Row {
            key,
            default,
            meaning,
        });
    }
    Ok(())
}

/// The reference table of the configuration in `files` (their source
/// text), from the struct `Config`.
fn generate(files: &[String]) -> Result<String, String> {
    let mut sections = BTreeMap::new();
    for text in files {
        let file = syn::parse_file(text).map_err(|e| e.to_string())?;
        for item in file.items {
            let syn::Item::Struct(s) = item else { continue };
            let syn::Fields::Named(named) = s.fields else {
                continue;
            };
            let name = s.ident.to_string();
            let serde = serde_attrs(&s.attrs, &name)?;
            sections.insert(
                name,
                Section {
                    fields: named.named.into_iter().collect(),
                    all_default: serde.default,
                },
            );
        }
    }
    if !sections.contains_key("Config") {
        return Err("no struct `Config`".into());
    }
    let mut rows = Vec::new();
    walk(&sections, "Config", "", &mut rows)?;
    let mut out = format!("{BEGIN}\n| key | default | meaning |\n| --- | --- | --- |\n");
    for r in rows {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            r.key,
            cell(&r.default),
            cell(&r.meaning)
        ));
    }
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

/// The source text of src/config/*.rs.
fn config_sources(root: &Path) -> Vec<String> {
    let mut paths: Vec<_> = std::fs::read_dir(root.join("src/config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn the_readme_reference_is_the_doc_comments() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = generate(&config_sources(root)).unwrap_or_else(|e| panic!("{e}"));
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (start, end) = match (readme.find(BEGIN), readme.find(END)) {
        (Some(s), Some(e)) if s < e => (s, e + END.len() + 1),
        _ => panic!("README.md has no generated configuration reference ({BEGIN} ... {END})"),
    };
    if std::env::var_os("INLET_UPDATE_README").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&readme_path, updated).unwrap();
        return;
    }
    let current = &readme[start..end];
    if current != table {
        let differ: Vec<String> = current
            .lines()
            .zip(table.lines())
            .filter(|(a, b)| a != b)
            .take(3)
            .map(|(a, b)| format!("README:      {a}\ngenerated:   {b}"))
            .collect();
        panic!(
            "README.md's configuration reference differs from the doc comments of \
             src/config/*.rs ({} rows in README, {} generated):\n{}\n\
             edit the doc comments, then INLET_UPDATE_README=1 cargo nextest run --lib \
             config::reference",
            current.lines().count(),
            table.lines().count(),
            differ.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::generate;

    fn one(fields: &str) -> Result<String, String> {
        generate(&[format!(
            "#[derive(Deserialize)]\n#[serde(deny_unknown_fields)]\npub struct Config {{\n{fields}\n}}\n\
             #[derive(Default)]\n#[serde(default)]\npub struct Inner {{\n/// Rows. Default: 8.\npub rows: usize,\n}}"
        )])
    }

    #[test]
    fn documented_keys_become_rows_with_their_defaults() {
        let t = one(
            "/// The id.\npub id: String,\n/// Nested.\n#[serde(default)]\npub inner: Inner,\n\
             /// How long. Default: `25s`. Keep it short.\n#[serde(default = \"d\", with = \"humantime_serde\")]\npub wait: Duration,\n\
             /// Maybe.\npub opt: Option<String>,",
        )
        .unwrap();
        assert!(t.contains("| `id` | required | The id. |"), "{t}");
        assert!(t.contains("| `inner.rows` | 8 | Rows. |"), "{t}");
        assert!(
            t.contains("| `wait` | `25s` | How long. Keep it short. |"),
            "{t}"
        );
        assert!(t.contains("| `opt` | unset | Maybe. |"), "{t}");
    }

    #[test]
    fn a_key_without_docs_or_unstated_default_or_unknown_serde_stops_it() {
        let e = one("pub id: String,").unwrap_err();
        assert!(e.contains("`id` has no doc comment"), "{e}");
        let e = one("/// The n.\n#[serde(default)]\npub n: u32,").unwrap_err();
        assert!(e.contains("`n` has a default but"), "{e}");
        let e = one("/// The n.\n#[serde(rename = \"m\")]\npub n: u32,").unwrap_err();
        assert!(e.contains("unknown serde attribute `rename`"), "{e}");
        let e = one("/// The n. Default: 3.\npub n: u32,").unwrap_err();
        assert!(e.contains("`n` is required"), "{e}");
    }
}
