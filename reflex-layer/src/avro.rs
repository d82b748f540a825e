//! Avro contracts and the single-object codec (`C3 01` + CRC-64-AVRO fingerprint, little-endian,
//! + Avro binary body), read at start-up from the repository's `schemas/` directory.
//!
//! The schema files reference each other by full name; [`Contracts::load`] expands every record
//! (first occurrence of a named type inlined, later ones by full name, depth-first in field
//! order) and computes the Parsing Canonical Form and its fingerprint itself, because some
//! `apache-avro` versions keep `logicalType` in the canonical form (AVRO-4004) and so disagree
//! with the fingerprints in docs/wire-formats.md. `apache-avro` does the binary encoding and
//! decoding (and schema resolution for the versions kept in `schemas/history/`).

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest value the decoder accepts (same as the Python codec's default `max_bytes`).
pub const MAX_BYTES: usize = 1 << 20;
/// Single-object encoding marker.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Why a value could not be decoded; `class()` is what goes into `DeadLetter.error_class`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    EmptyPayload,
    UnknownFormat(String),
    UnsupportedFormat(String),
    TruncatedBody(String),
    UnknownFingerprint(u64),
    SchemaMismatch(String),
    BodyTooLarge(usize),
    InvalidUtf8(String),
    TrailingBytes(usize),
    /// Confluent framing: the registry answered 404 for this schema id.
    UnknownSchemaId(u32),
    /// Confluent framing: the registry could not be reached or failed (the record is
    /// dead-lettered with its payload, so it can be replayed once the registry is back).
    RegistryUnavailable(String),
}

impl DecodeError {
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::EmptyPayload => "EmptyPayload",
            DecodeError::UnknownFormat(_) => "UnknownFormat",
            DecodeError::UnsupportedFormat(_) => "UnsupportedFormat",
            DecodeError::TruncatedBody(_) => "TruncatedBody",
            DecodeError::UnknownFingerprint(_) => "UnknownFingerprint",
            DecodeError::SchemaMismatch(_) => "SchemaMismatch",
            DecodeError::BodyTooLarge(_) => "BodyTooLarge",
            DecodeError::InvalidUtf8(_) => "InvalidUtf8",
            DecodeError::TrailingBytes(_) => "TrailingBytes",
            DecodeError::UnknownSchemaId(_) => "UnknownSchemaId",
            DecodeError::RegistryUnavailable(_) => "RegistryUnavailable",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::EmptyPayload => write!(f, "empty payload"),
            DecodeError::UnknownFormat(s)
            | DecodeError::UnsupportedFormat(s)
            | DecodeError::TruncatedBody(s)
            | DecodeError::SchemaMismatch(s)
            | DecodeError::InvalidUtf8(s)
            | DecodeError::RegistryUnavailable(s) => write!(f, "{s}"),
            DecodeError::UnknownSchemaId(id) => {
                write!(f, "the schema registry does not know schema id {id}")
            }
            DecodeError::UnknownFingerprint(fp) => {
                write!(f, "unknown schema fingerprint 0x{fp:016x}")
            }
            DecodeError::BodyTooLarge(n) => {
                write!(f, "value is {n} bytes, more than the limit of {MAX_BYTES}")
            }
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes left after the record"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------------------------------------
// CRC-64-AVRO and Parsing Canonical Form

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

fn fp_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            }
            *slot = fp;
        }
        t
    })
}

/// The 64-bit Rabin fingerprint ("CRC-64-AVRO") of `data`.
pub fn crc64_avro(data: &[u8]) -> u64 {
    let t = fp_table();
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ t[((fp ^ b as u64) & 0xff) as usize];
    }
    fp
}

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The full name of the named type defined by the schema object `o`, in enclosing namespace `ns`.
fn defined_name(o: &serde_json::Map<String, Json>, ns: Option<&str>) -> String {
    let name = o.get("name").and_then(Json::as_str).unwrap_or("");
    full_name(name, o.get("namespace").and_then(Json::as_str).or(ns))
}

fn full_name(name: &str, ns: Option<&str>) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        match ns {
            Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_string(),
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

/// Parsing Canonical Form of a (fully expanded or not) schema given as JSON.
pub fn canonical_form(schema: &Json) -> String {
    let mut out = String::new();
    pcf(schema, None, &mut out);
    out
}

fn pcf(s: &Json, ns: Option<&str>, out: &mut String) {
    match s {
        Json::String(name) => {
            if PRIMITIVES.contains(&name.as_str()) {
                out.push_str(&json_str(name));
            } else {
                out.push_str(&json_str(&full_name(name, ns)));
            }
        }
        Json::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pcf(b, ns, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            let ty = o.get("type").and_then(Json::as_str).unwrap_or("");
            match ty {
                "record" | "error" | "enum" | "fixed" => {
                    let full = defined_name(o, ns);
                    let inner_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                    out.push_str(&format!(
                        "{{\"name\":{},\"type\":{}",
                        json_str(&full),
                        json_str(ty)
                    ));
                    match ty {
                        "enum" => {
                            out.push_str(",\"symbols\":[");
                            let syms = o.get("symbols").and_then(Json::as_array);
                            for (i, sym) in syms.into_iter().flatten().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                out.push_str(&json_str(sym.as_str().unwrap_or("")));
                            }
                            out.push(']');
                        }
                        "fixed" => {
                            let size = o.get("size").and_then(Json::as_u64).unwrap_or(0);
                            out.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            out.push_str(",\"fields\":[");
                            let fields = o.get("fields").and_then(Json::as_array);
                            for (i, f) in fields.into_iter().flatten().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let fname = f.get("name").and_then(Json::as_str).unwrap_or("");
                                out.push_str(&format!("{{\"name\":{},\"type\":", json_str(fname)));
                                pcf(
                                    f.get("type").unwrap_or(&Json::Null),
                                    inner_ns.as_deref(),
                                    out,
                                );
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    pcf(o.get("items").unwrap_or(&Json::Null), ns, out);
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    pcf(o.get("values").unwrap_or(&Json::Null), ns, out);
                    out.push('}');
                }
                // primitives, with or without a logicalType, reduce to their simple form
                other => pcf(&Json::String(other.to_string()), ns, out),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and expansion

/// Expand string references to named types: the first occurrence gets the full definition
/// (itself expanded), later ones the full name. Definitions met inline are registered too.
fn expand(
    s: &Json,
    ns: Option<&str>,
    named: &HashMap<String, Json>,
    seen: &mut std::collections::HashSet<String>,
) -> Result<Json, String> {
    match s {
        Json::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
            let full = full_name(name, ns);
            if seen.contains(&full) {
                Ok(Json::String(full))
            } else {
                let def = named
                    .get(&full)
                    .ok_or_else(|| format!("unknown named type {full}"))?;
                expand(def, None, named, seen)
            }
        }
        Json::Array(b) => Ok(Json::Array(
            b.iter()
                .map(|x| expand(x, ns, named, seen))
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(o) => {
            let ty = o.get("type").and_then(Json::as_str).unwrap_or("");
            let mut out = o.clone();
            match ty {
                "record" | "error" | "enum" | "fixed" => {
                    let full = defined_name(o, ns);
                    if !seen.insert(full.clone()) {
                        return Ok(Json::String(full));
                    }
                    // write the full name so the expanded schema does not depend on context
                    out.insert("name".into(), Json::String(full.clone()));
                    out.remove("namespace");
                    if ty == "record" || ty == "error" {
                        let inner_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                        let mut fields = Vec::new();
                        for f in o
                            .get("fields")
                            .and_then(Json::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let mut f2: Map<String, Json> =
                                f.as_object().cloned().unwrap_or_default();
                            let t = f.get("type").cloned().unwrap_or(Json::Null);
                            f2.insert("type".into(), expand(&t, inner_ns.as_deref(), named, seen)?);
                            fields.push(Json::Object(f2));
                        }
                        out.insert("fields".into(), Json::Array(fields));
                    }
                    Ok(Json::Object(out))
                }
                "array" => {
                    let items = o.get("items").cloned().unwrap_or(Json::Null);
                    out.insert("items".into(), expand(&items, ns, named, seen)?);
                    Ok(Json::Object(out))
                }
                "map" => {
                    let values = o.get("values").cloned().unwrap_or(Json::Null);
                    out.insert("values".into(), expand(&values, ns, named, seen)?);
                    Ok(Json::Object(out))
                }
                _ => Ok(Json::Object(out)),
            }
        }
        other => Ok(other.clone()),
    }
}

/// Register every named type defined (at top level or inline) in `s`.
fn collect_named(s: &Json, ns: Option<&str>, named: &mut HashMap<String, Json>) {
    match s {
        Json::Array(b) => b.iter().for_each(|x| collect_named(x, ns, named)),
        Json::Object(o) => {
            let ty = o.get("type").and_then(Json::as_str).unwrap_or("");
            match ty {
                "record" | "error" | "enum" | "fixed" => {
                    let full = defined_name(o, ns);
                    let mut def = o.clone();
                    def.insert("name".into(), Json::String(full.clone()));
                    def.remove("namespace");
                    let inner_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                    for f in o
                        .get("fields")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(t) = f.get("type") {
                            collect_named(t, inner_ns.as_deref(), named);
                        }
                    }
                    // fields keep relative names; give the definition its namespace context
                    if let Some(n) = &inner_ns {
                        def.insert("namespace".into(), Json::String(n.clone()));
                        def.insert(
                            "name".into(),
                            Json::String(full.rsplit('.').next().unwrap_or(&full).to_string()),
                        );
                    }
                    named.entry(full).or_insert(Json::Object(def));
                }
                "array" => {
                    if let Some(i) = o.get("items") {
                        collect_named(i, ns, named)
                    }
                }
                "map" => {
                    if let Some(v) = o.get("values") {
                        collect_named(v, ns, named)
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// One record contract: its expanded schema, canonical form and fingerprint.
#[derive(Debug, Clone)]
pub struct Contract {
    pub full_name: String,
    pub expanded: Json,
    pub canonical: String,
    pub fingerprint: u64,
    pub schema: Schema,
}

impl Contract {
    fn build(full_name: &str, named: &HashMap<String, Json>) -> Result<Contract, String> {
        let def = named
            .get(full_name)
            .ok_or_else(|| format!("no schema for {full_name}"))?;
        let mut seen = std::collections::HashSet::new();
        let expanded = expand(def, None, named, &mut seen)?;
        let canonical = canonical_form(&expanded);
        let fingerprint = crc64_avro(canonical.as_bytes());
        let schema =
            Schema::parse(&expanded).map_err(|e| format!("{full_name}: invalid schema: {e}"))?;
        Ok(Contract {
            full_name: full_name.to_string(),
            expanded,
            canonical,
            fingerprint,
            schema,
        })
    }
}

/// A writer schema fetched from a Confluent schema registry (by id), ready to decode with.
#[derive(Debug, Clone)]
pub struct RegistryWriter {
    pub full_name: String,
    pub fingerprint: u64,
    pub schema: Schema,
    json: Json,
}

impl RegistryWriter {
    /// From the schema text the registry returns (`GET /schemas/ids/{id}` → `schema`). It must
    /// be self-contained (our contracts are registered expanded; registry references are not
    /// followed).
    pub fn from_schema_text(text: &str) -> Result<RegistryWriter, String> {
        let raw: Json = serde_json::from_str(text).map_err(|e| format!("schema JSON: {e}"))?;
        let Some(o) = raw.as_object() else {
            return Err("the registry schema is not a record".into());
        };
        let full_name = defined_name(o, None);
        let mut named = HashMap::new();
        collect_named(&raw, None, &mut named);
        let mut seen = std::collections::HashSet::new();
        let expanded = expand(&raw, None, &named, &mut seen)?;
        let fingerprint = crc64_avro(canonical_form(&expanded).as_bytes());
        let schema = Schema::parse(&expanded).map_err(|e| format!("invalid schema: {e}"))?;
        Ok(RegistryWriter {
            full_name,
            fingerprint,
            schema,
            json: expanded,
        })
    }
}

/// Where the Confluent decoder gets writer schemas by id (the registry client, or a map in tests).
pub trait WriterSchemas: Send + Sync + fmt::Debug {
    fn writer(&self, schema_id: u32) -> Result<std::sync::Arc<RegistryWriter>, DecodeError>;

    /// What the source did so far (for `/metrics`).
    fn lookups(&self) -> crate::registry::Lookups {
        crate::registry::Lookups::default()
    }
}

/// Split a Confluent-framed value: `00` + 4-byte big-endian schema id + body.
pub fn confluent_header(data: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match data.first() {
        Some(0x00) => {}
        Some(b) => {
            return Err(DecodeError::UnknownFormat(format!(
                "first byte 0x{b:02x} is not 00 (Confluent)"
            )))
        }
        None => return Err(DecodeError::EmptyPayload),
    }
    if data.len() < 5 {
        return Err(DecodeError::TruncatedBody(
            "Confluent header shorter than 5 bytes".into(),
        ));
    }
    let id = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes"));
    Ok((id, &data[5..]))
}

/// Writer schema known by fingerprint: the current contract, or a historical version of it
/// (decoded with schema resolution to the current one).
#[derive(Debug, Clone)]
struct Known {
    writer: Schema,
    /// the writer schema, expanded, for [`walk`]
    writer_json: Json,
    /// full name of the current contract it resolves to
    current: String,
    historical: bool,
}

/// All record contracts of `schemas/` (current) plus `schemas/history/` (older versions).
#[derive(Debug, Clone)]
pub struct Contracts {
    pub dir: PathBuf,
    current: HashMap<String, Contract>,
    by_fp: HashMap<u64, Known>,
}

fn read_json(path: &Path) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn avsc_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "avsc"))
        .collect();
    v.sort();
    Ok(v)
}

impl Contracts {
    /// Default schema directory: `<crate dir>/../schemas`.
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("schemas")
    }

    pub fn load(dir: &Path) -> Result<Contracts, String> {
        // a length prefix larger than any value we accept is a corrupt body, not an allocation
        apache_avro::util::max_allocation_bytes(MAX_BYTES);
        let mut named = HashMap::new();
        let mut records = Vec::new();
        for p in avsc_files(dir)? {
            let j = read_json(&p)?;
            if j.get("type").and_then(Json::as_str) == Some("record") {
                let name = j.get("name").and_then(Json::as_str).unwrap_or("");
                let ns = j.get("namespace").and_then(Json::as_str);
                records.push(full_name(name, ns));
            }
            collect_named(&j, None, &mut named);
        }
        if records.is_empty() {
            return Err(format!("no record schemas in {}", dir.display()));
        }
        let mut current = HashMap::new();
        let mut by_fp = HashMap::new();
        for r in &records {
            let c = Contract::build(r, &named)?;
            by_fp.insert(
                c.fingerprint,
                Known {
                    writer: c.schema.clone(),
                    writer_json: c.expanded.clone(),
                    current: r.clone(),
                    historical: false,
                },
            );
            current.insert(r.clone(), c);
        }
        let hist = dir.join("history");
        if hist.is_dir() {
            for p in avsc_files(&hist)? {
                let j = read_json(&p)?;
                let name = j.get("name").and_then(Json::as_str).unwrap_or("");
                let ns = j.get("namespace").and_then(Json::as_str);
                let full = full_name(name, ns);
                if !current.contains_key(&full) {
                    continue;
                }
                // the historical file's own definitions win over the current ones
                let mut hnamed = named.clone();
                let mut own = HashMap::new();
                collect_named(&j, None, &mut own);
                hnamed.extend(own);
                let c = Contract::build(&full, &hnamed)?;
                by_fp.entry(c.fingerprint).or_insert(Known {
                    writer: c.schema,
                    writer_json: c.expanded,
                    current: full,
                    historical: true,
                });
            }
        }
        Ok(Contracts {
            dir: dir.to_path_buf(),
            current,
            by_fp,
        })
    }

    pub fn get(&self, full_name: &str) -> Option<&Contract> {
        self.current.get(full_name)
    }

    fn contract(&self, full_name: &str) -> &Contract {
        self.current
            .get(full_name)
            .unwrap_or_else(|| panic!("contract {full_name} not loaded"))
    }

    /// Number of fingerprints the decoder knows (current + historical).
    pub fn known_fingerprints(&self) -> usize {
        self.by_fp.len()
    }

    /// Encode `value` (a record of `full_name`) in single-object encoding.
    pub fn encode(&self, full_name: &str, value: Value) -> Result<Vec<u8>, String> {
        let c = self.contract(full_name);
        #[allow(deprecated)]
        let body = apache_avro::to_avro_datum(&c.schema, value)
            .map_err(|e| format!("encoding {full_name}: {e}"))?;
        let mut out = Vec::with_capacity(10 + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&c.fingerprint.to_le_bytes());
        out.extend_from_slice(&body);
        if out.len() > MAX_BYTES {
            return Err(format!("encoded {full_name} is {} bytes", out.len()));
        }
        Ok(out)
    }

    /// Decode a Confluent-framed value, its writer schema from `writers` (resolved to our
    /// current contract of the same full name when it differs).
    pub fn decode_confluent(
        &self,
        data: &[u8],
        writers: &dyn WriterSchemas,
    ) -> Result<(String, Value), DecodeError> {
        if data.len() > MAX_BYTES {
            return Err(DecodeError::BodyTooLarge(data.len()));
        }
        let (id, body) = confluent_header(data)?;
        let w = writers.writer(id)?;
        let Some(current) = self.current.get(&w.full_name) else {
            return Err(DecodeError::SchemaMismatch(format!(
                "registry schema {id} is {}, not one of our contracts",
                w.full_name
            )));
        };
        let reader = (w.fingerprint != current.fingerprint).then_some(&current.schema);
        let mut rest = body;
        #[allow(deprecated)]
        let value = apache_avro::from_avro_datum(&w.schema, &mut rest, reader).map_err(|e| {
            let mut named = HashMap::new();
            let mut again = body;
            match walk(&w.json, &mut again, &mut named) {
                Err(Walk::Eof) => DecodeError::TruncatedBody(format!("body ends early: {e}")),
                _ => classify(e),
            }
        })?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok((current.full_name.clone(), value))
    }

    /// Decode a single-object value: the current contract's full name and the record.
    pub fn decode(&self, data: &[u8]) -> Result<(String, Value), DecodeError> {
        if data.is_empty() {
            return Err(DecodeError::EmptyPayload);
        }
        if data.len() > MAX_BYTES {
            return Err(DecodeError::BodyTooLarge(data.len()));
        }
        match data[0] {
            0xC3 => {}
            0x00 => {
                return Err(DecodeError::UnsupportedFormat(
                    "Confluent framing (0x00 + schema id) needs --schema-registry-url \
                     (OCTO_SCHEMA_REGISTRY_URL)"
                        .into(),
                ))
            }
            b => {
                return Err(DecodeError::UnknownFormat(format!(
                    "first byte 0x{b:02x} is neither C3 (single-object) nor 00 (Confluent)"
                )))
            }
        }
        if data.len() < 2 {
            return Err(DecodeError::TruncatedBody(
                "header shorter than 10 bytes".into(),
            ));
        }
        if data[1] != 0x01 {
            return Err(DecodeError::UnknownFormat(format!(
                "C3 followed by 0x{:02x}, not 01",
                data[1]
            )));
        }
        if data.len() < 10 {
            return Err(DecodeError::TruncatedBody(
                "header shorter than 10 bytes".into(),
            ));
        }
        let fp = u64::from_le_bytes(data[2..10].try_into().expect("8 bytes"));
        let known = self
            .by_fp
            .get(&fp)
            .ok_or(DecodeError::UnknownFingerprint(fp))?;
        let reader_schema = if known.historical {
            Some(&self.contract(&known.current).schema)
        } else {
            None
        };
        let mut body = &data[10..];
        #[allow(deprecated)]
        let value =
            apache_avro::from_avro_datum(&known.writer, &mut body, reader_schema).map_err(|e| {
                // apache-avro reports some early ends as other errors (e.g. a cut map); our
                // own walk over the body tells a truncation apart precisely
                let mut named = HashMap::new();
                let mut rest = &data[10..];
                match walk(&known.writer_json, &mut rest, &mut named) {
                    Err(Walk::Eof) => DecodeError::TruncatedBody(format!("body ends early: {e}")),
                    _ => classify(e),
                }
            })?;
        if !body.is_empty() {
            return Err(DecodeError::TrailingBytes(body.len()));
        }
        Ok((known.current.clone(), value))
    }
}

fn classify(e: apache_avro::Error) -> DecodeError {
    use apache_avro::error::Details;
    let msg = e.to_string();
    // walk the source chain for the root cause
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return DecodeError::TruncatedBody(format!("body ends early: {msg}"));
            }
        }
        if s.downcast_ref::<std::string::FromUtf8Error>().is_some()
            || s.downcast_ref::<std::str::Utf8Error>().is_some()
        {
            return DecodeError::InvalidUtf8(msg);
        }
        src = s.source();
    }
    match e.details() {
        Details::ConvertToUtf8(_) | Details::ConvertToUtf8Error(_) => DecodeError::InvalidUtf8(msg),
        // a length larger than any value we accept can only come from a cut or corrupt body
        Details::MemoryAllocation { .. } => DecodeError::TruncatedBody(msg),
        _ => DecodeError::SchemaMismatch(msg),
    }
}

// ---------------------------------------------------------------------------------------------
// A structural walk over an Avro body, only to tell "ends early" apart from other errors.

#[derive(Debug)]
enum Walk {
    Eof,
    Bad,
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], Walk> {
    if data.len() < n {
        return Err(Walk::Eof);
    }
    let (a, b) = data.split_at(n);
    *data = b;
    Ok(a)
}

fn varint(data: &mut &[u8]) -> Result<i64, Walk> {
    let mut n: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = take(data, 1)?[0];
        if shift >= 64 {
            return Err(Walk::Bad);
        }
        n |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
        }
    }
    Err(Walk::Bad)
}

/// Skip one value of primitive type `t`; `None` if `t` is not primitive.
fn primitive(t: &str, data: &mut &[u8]) -> Option<Result<(), Walk>> {
    Some(match t {
        "null" => Ok(()),
        "boolean" => take(data, 1).map(|_| ()),
        "int" | "long" => varint(data).map(|_| ()),
        "float" => take(data, 4).map(|_| ()),
        "double" => take(data, 8).map(|_| ()),
        "bytes" | "string" => varint(data).and_then(|n| {
            if n < 0 {
                Err(Walk::Bad)
            } else {
                take(data, n as usize).map(|_| ())
            }
        }),
        _ => return None,
    })
}

fn walk<'s>(
    s: &'s Json,
    data: &mut &[u8],
    named: &mut HashMap<&'s str, &'s Json>,
) -> Result<(), Walk> {
    match s {
        Json::String(t) => match primitive(t, data) {
            Some(r) => r,
            None => {
                let def = *named.get(t.as_str()).ok_or(Walk::Bad)?;
                walk(def, data, named)
            }
        },
        Json::Array(branches) => {
            let i = varint(data)?;
            let b = branches
                .get(usize::try_from(i).map_err(|_| Walk::Bad)?)
                .ok_or(Walk::Bad)?;
            walk(b, data, named)
        }
        Json::Object(o) => {
            let ty = o.get("type").ok_or(Walk::Bad)?;
            let Some(tys) = ty.as_str() else {
                return walk(ty, data, named);
            };
            match tys {
                "record" | "error" => {
                    if let Some(n) = o.get("name").and_then(Json::as_str) {
                        named.insert(n, s);
                    }
                    for f in o
                        .get("fields")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                    {
                        walk(f.get("type").ok_or(Walk::Bad)?, data, named)?;
                    }
                    Ok(())
                }
                "enum" => {
                    if let Some(n) = o.get("name").and_then(Json::as_str) {
                        named.insert(n, s);
                    }
                    varint(data).map(|_| ())
                }
                "fixed" => {
                    if let Some(n) = o.get("name").and_then(Json::as_str) {
                        named.insert(n, s);
                    }
                    let size = o.get("size").and_then(Json::as_u64).ok_or(Walk::Bad)?;
                    take(data, size as usize).map(|_| ())
                }
                "array" | "map" => {
                    let item = o
                        .get(if tys == "array" { "items" } else { "values" })
                        .ok_or(Walk::Bad)?;
                    loop {
                        let mut count = varint(data)?;
                        if count == 0 {
                            return Ok(());
                        }
                        if count < 0 {
                            count = count.checked_neg().ok_or(Walk::Bad)?;
                            varint(data)?; // block size in bytes
                        }
                        for _ in 0..count {
                            if tys == "map" {
                                primitive("string", data).ok_or(Walk::Bad)??;
                            }
                            walk(item, data, named)?;
                        }
                    }
                }
                other => primitive(other, data).ok_or(Walk::Bad)?,
            }
        }
        _ => Err(Walk::Bad),
    }
}
