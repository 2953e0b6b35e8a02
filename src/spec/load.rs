//! Figment layering of a spec, in ascending order of precedence:
//!
//! 1. built-in defaults (`Spec::default()`),
//! 2. the chain of `extends = "base.toml"` files, the most basic first (paths relative to
//!    the file that names them),
//! 3. the spec file itself,
//! 4. environment variables `ORCHESTRATE_<SECTION>__<KEY>` (sorted by name),
//! 5. `--set section.key=value` flags, in command-line order.
//!
//! A spec file and each `extends` file must be a regular file of at most 1 MiB
//! ([`MAX_SPEC_BYTES`]): a FIFO or device is refused before it is opened for reading.
//!
//! Tables merge key by key; any other value (arrays included) is replaced whole. Each layer is
//! its own figment provider whose metadata names the source, so every problem and
//! `config --explain` can say which file, variable or flag set a key.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value as FigValue};
use figment::{Figment, Metadata, Profile, Provider};
use toml::{Table, Value};

use super::error::{MAX_SPEC_BYTES, Problem, ReadError, SpecError};
use super::schema::{self, fmt_value, get_path};
use super::types::Spec;
use super::validate;

/// Prefix of the environment variables that override spec keys.
pub const ENV_PREFIX: &str = "ORCHESTRATE_";

/// Name of the built-in defaults layer, as `--explain` prints it.
pub const DEFAULTS: &str = "built-in default";

/// One layer: a table of values and the name of where it came from.
struct Layer {
    name: String,
    file: Option<PathBuf>,
    data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let md = Metadata::named(self.name.clone());
        match &self.file {
            Some(f) => md.source(f.as_path()),
            None => md,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut map = Map::new();
        map.insert(Profile::Default, self.data.clone());
        Ok(map)
    }
}

impl Layer {
    fn new(
        name: String,
        file: Option<PathBuf>,
        value: impl serde::Serialize,
    ) -> Result<Self, SpecError> {
        let data = FigValue::serialize(value)
            .ok()
            .and_then(|v| v.into_dict())
            .ok_or_else(|| SpecError::Invalid {
                problems: vec![Problem {
                    origin: name.clone(),
                    key: String::new(),
                    value: None,
                    message: "is not a table of keys".into(),
                }],
            })?;
        Ok(Layer { name, file, data })
    }
}

/// A loaded spec together with the layers it came from.
pub struct Resolved {
    /// The validated spec.
    pub spec: Spec,
    /// The spec file named on the command line.
    pub file: PathBuf,
    figment: Figment,
    name_from_file: bool,
}

/// Loads, layers and validates a spec, reading overrides from the process environment.
pub fn load(path: &Path, sets: &[String]) -> Result<Spec, SpecError> {
    resolve(path, sets, std::env::vars()).map(|r| r.spec)
}

/// Loads, layers and validates a spec with the given environment variables.
pub fn resolve(
    path: &Path,
    sets: &[String],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Resolved, SpecError> {
    let mut figment = Figment::from(Layer::new(DEFAULTS.into(), None, Spec::default())?);
    for (file, mut table) in read_chain(path)? {
        let name = file.display().to_string();
        normalize(&mut table, &name)?;
        figment = figment.merge(Layer::new(name, Some(file), table)?);
    }
    for layer in env_layers(env)? {
        figment = figment.merge(layer);
    }
    for arg in sets {
        figment = figment.merge(set_layer(arg)?);
    }

    let file = path.to_path_buf();
    let mut resolved = Resolved {
        spec: Spec::default(),
        file,
        figment,
        name_from_file: false,
    };
    resolved.extract()?;
    Ok(resolved)
}

impl Resolved {
    /// Checks keys, types and ranges, and fills `spec`.
    fn extract(&mut self) -> Result<(), SpecError> {
        let merged = self
            .figment
            .data()
            .ok()
            .and_then(|mut m| m.remove(&Profile::Default))
            .unwrap_or_default();
        let unknown: Vec<Problem> = schema::unknown_keys(&merged)
            .into_iter()
            .map(|u| Problem {
                origin: self.origin(&u.key),
                value: None,
                message: u.message(),
                key: u.key,
            })
            .collect();
        if !unknown.is_empty() {
            return Err(SpecError::Invalid { problems: unknown });
        }

        self.spec = self
            .figment
            .extract::<Spec>()
            .map_err(|e| SpecError::Invalid {
                problems: e.into_iter().map(|e| self.figment_problem(&e)).collect(),
            })?;
        if self.spec.name.is_empty() {
            self.spec.name = self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.name_from_file = true;
        }

        let problems: Vec<Problem> = validate::check(&self.spec)
            .into_iter()
            .map(|v| Problem {
                origin: self.origin(&v.key),
                key: v.key,
                value: Some(v.value),
                message: v.message,
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid { problems })
        }
    }

    /// Where a run's bad value of `key` came from: when the grid set that very key, the layer
    /// of that grid entry (a `--set` flag, a variable, a file); otherwise the spec file.
    pub fn run_origin(&self, key: &str) -> String {
        self.grid_entry_origin(&format!("grid.{key}"))
            .unwrap_or_else(|| self.file.display().to_string())
    }

    /// The layer that set the grid entry named `at` (`grid.KEY`, `grid.zip.N...`,
    /// `grid.random.KEY`, `grid entry { KEY = ... }`). Grid keys are dotted setting names
    /// held as single keys, which figment's dotted lookup cannot address, so the merged
    /// grid is walked by hand.
    pub fn grid_entry_origin(&self, at: &str) -> Option<String> {
        let key = match at.strip_prefix("grid entry { ") {
            Some(rest) => rest.split(" = ").next()?,
            None => at.strip_prefix("grid.")?,
        };
        if let Some(rest) = key.strip_prefix("random.") {
            return match rest {
                "samples" | "seed" => self.tagged_origin(&["grid", "random", rest]),
                _ => self.tagged_origin(&["grid", "random", "params", rest]),
            };
        }
        if let Some(rest) = key.strip_prefix("zip.") {
            return self.tagged_origin(&["grid", "zip", rest.split('.').next()?]);
        }
        let g = &self.spec.grid;
        if g.axes.contains_key(key) {
            return self.tagged_origin(&["grid", "axes", key]);
        }
        if let Some(i) = g.zip.iter().position(|z| z.contains_key(key)) {
            return self.tagged_origin(&["grid", "zip", &i.to_string()]);
        }
        if let Some(i) = g.variant.iter().position(|v| v.contains_key(key)) {
            return self.tagged_origin(&["grid", "variant", &i.to_string()]);
        }
        if g.random.params.contains_key(key) {
            return self.tagged_origin(&["grid", "random", "params", key]);
        }
        None
    }

    /// The layer of the merged value at `path`, each element one key or list index.
    fn tagged_origin(&self, path: &[&str]) -> Option<String> {
        let (first, rest) = path.split_first()?;
        let mut v = self.figment.find_value(first).ok()?;
        for k in rest {
            v = match v {
                FigValue::Dict(_, mut d) => d.remove(*k)?,
                FigValue::Array(_, a) => a.into_iter().nth(k.parse().ok()?)?,
                _ => return None,
            };
        }
        let md = self.figment.get_metadata(v.tag())?;
        Some(md.name.to_string())
    }

    /// Which layer set `key` (or the closest table above it that figment can find).
    pub fn origin(&self, key: &str) -> String {
        if key == "name" && self.name_from_file {
            return format!(
                "{} (experiment name taken from the file name)",
                self.file.display()
            );
        }
        let mut k = key;
        loop {
            if let Some(md) = self.figment.find_metadata(k) {
                return md.name.to_string();
            }
            match k.rsplit_once('.') {
                Some((parent, _)) => k = parent,
                None => return self.file.display().to_string(),
            }
        }
    }

    fn figment_problem(&self, e: &figment::Error) -> Problem {
        use figment::error::Kind;
        let key = e.path.join(".");
        let value = self
            .figment
            .find_value(&key)
            .ok()
            .and_then(|v| Value::try_from(&v).ok())
            .map(|v| fmt_value(&v));
        let message = match &e.kind {
            Kind::UnknownVariant(_, allowed) => {
                let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                format!("unknown value; allowed: {}", allowed.join(", "))
            }
            Kind::InvalidType(actual, expected) => {
                format!("wrong type: found {actual}, expected {expected}")
            }
            Kind::InvalidValue(actual, expected) => {
                format!("invalid value: found {actual}, expected {expected}")
            }
            Kind::Message(m) if m.contains("Padding") => {
                "expected a number of pixels or \"same\"".into()
            }
            other => other.to_string(),
        };
        Problem {
            origin: e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_else(|| self.origin(&key)),
            key,
            value,
            message,
        }
    }

    /// `key = value  # from SOURCE` for `key` and, when it is a table, every key under it;
    /// plus a line when the grid varies it.
    pub fn explain(&self, key: &str) -> Result<String, String> {
        let root = Value::try_from(&self.spec).map_err(|e| e.to_string())?;
        let Some(value) = get_path(&root, key) else {
            let hint = schema::suggest_key(key)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(format!("no key `{key}` in the spec{hint}"));
        };
        let mut leaves = Vec::new();
        collect_leaves(value, key, &mut leaves);
        let mut out = String::new();
        for (k, v) in leaves {
            out.push_str(&format!(
                "{k} = {}  # from {}\n",
                fmt_value(v),
                self.origin(&k)
            ));
        }
        for line in grid_mentions(&self.spec, key) {
            out.push_str(&format!("# {line}\n"));
        }
        Ok(out)
    }
}

fn collect_leaves<'a>(v: &'a Value, key: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Table(t) if !key.starts_with("grid") => {
            for (k, child) in t {
                collect_leaves(child, &format!("{key}.{k}"), out);
            }
        }
        _ => out.push((key.to_string(), v)),
    }
}

/// Where the grid varies `key` or a key under it.
fn grid_mentions(spec: &Spec, key: &str) -> Vec<String> {
    let g = &spec.grid;
    let hits = |k: &str| k == key || k.starts_with(&format!("{key}."));
    let mut out = Vec::new();
    for (k, vals) in &g.axes {
        if hits(k) {
            out.push(format!(
                "varied by grid axis `{k}`: {}",
                fmt_value(&Value::Array(vals.clone()))
            ));
        }
    }
    for (i, group) in g.zip.iter().enumerate() {
        for (k, vals) in group {
            if hits(k) {
                let vals = fmt_value(&Value::Array(vals.clone()));
                out.push(format!("varied by grid zip group {i}, `{k}`: {vals}"));
            }
        }
    }
    for (i, variant) in g.variant.iter().enumerate() {
        for (k, v) in variant {
            if hits(k) {
                out.push(format!("set by grid variant {i}: `{k}` = {}", fmt_value(v)));
            }
        }
    }
    for k in g.random.params.keys() {
        if hits(k) {
            out.push(format!("sampled by grid.random: `{k}`"));
        }
    }
    out
}

/// The spec file and its `extends` chain, most basic first.
fn read_chain(path: &Path) -> Result<Vec<(PathBuf, Table)>, SpecError> {
    let mut chain: Vec<(PathBuf, Table)> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut cur = path.to_path_buf();
    let mut by: Option<PathBuf> = None;
    loop {
        let text = read_spec_file(&cur).map_err(|source| match &by {
            None => SpecError::Unreadable {
                file: cur.clone(),
                source,
            },
            Some(by) => SpecError::Extends {
                by: by.clone(),
                file: cur.clone(),
                source,
            },
        })?;
        let canonical = std::fs::canonicalize(&cur).unwrap_or_else(|_| cur.clone());
        if seen.contains(&canonical) {
            let mut names: Vec<String> =
                chain.iter().map(|(p, _)| p.display().to_string()).collect();
            names.push(cur.display().to_string());
            return Err(SpecError::ExtendsCycle {
                chain: names.join(" -> "),
            });
        }
        seen.push(canonical);
        let mut table = parse_file(&cur, &text)?;
        let extends = table.remove("extends");
        let next = match extends {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(other) => {
                return Err(SpecError::Invalid {
                    problems: vec![Problem {
                        origin: cur.display().to_string(),
                        key: "extends".into(),
                        value: Some(fmt_value(&other)),
                        message: "must be the path of a base spec, e.g. \"base/cnn.toml\"".into(),
                    }],
                });
            }
        };
        let parent = cur.parent().map(Path::to_path_buf).unwrap_or_default();
        chain.push((cur.clone(), table));
        match next {
            Some(rel) => {
                by = Some(cur);
                cur = parent.join(rel);
            }
            None => break,
        }
    }
    chain.reverse();
    Ok(chain)
}

/// Reads one spec file as text, refusing what is not a regular file
/// ([`crate::regular_file`]) and anything over [`MAX_SPEC_BYTES`] without reading past the cap.
fn read_spec_file(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let (file, _) = crate::regular_file::open(path).map_err(|e| match e {
        crate::regular_file::OpenError::NotRegular { kind } => ReadError::NotRegular { kind },
        crate::regular_file::OpenError::Io(e) => ReadError::Io(e),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText)
}

/// Parses TOML text, turning syntax errors into file:line:column messages.
fn parse_file(file: &Path, text: &str) -> Result<Table, SpecError> {
    text.parse::<Table>().map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SpecError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            // The parser's message can take several lines; an error is one line.
            message: e.message().trim().lines().collect::<Vec<_>>().join("; "),
        }
    })
}

/// Maps the raw `[grid]` syntax onto `GridSpec`: plain dotted keys become `axes`; nested
/// tables (`optimizer.lr = [...]` without quotes) are flattened into dotted keys.
fn normalize(table: &mut Table, origin: &str) -> Result<(), SpecError> {
    let Some(Value::Table(grid)) = table.get_mut("grid") else {
        return Ok(());
    };
    let raw = std::mem::take(grid);
    let mut axes = Table::new();
    let mut problems = Vec::new();
    for (k, v) in raw {
        match (k.as_str(), v) {
            ("axes", Value::Table(t)) => {
                for (ak, av) in t {
                    flatten(&ak, av, &mut axes);
                }
            }
            ("zip" | "variant", Value::Array(items)) => {
                let flat = items
                    .into_iter()
                    .map(|item| match item {
                        Value::Table(t) => {
                            let mut out = Table::new();
                            for (ik, iv) in t {
                                flatten(&ik, iv, &mut out);
                            }
                            Value::Table(out)
                        }
                        other => other,
                    })
                    .collect();
                grid.insert(k, Value::Array(flat));
            }
            ("random", Value::Table(t)) => {
                grid.insert(k, Value::Table(normalize_random(t)));
            }
            ("axes" | "zip" | "variant" | "random", other) => {
                grid.insert(k, other);
            }
            (_, v) => flatten(&k, v, &mut axes),
        }
    }
    for (k, v) in &axes {
        if !matches!(v, Value::Array(_)) {
            problems.push(Problem {
                origin: origin.into(),
                key: format!("grid.{k}"),
                value: Some(fmt_value(v)),
                message: "a grid axis takes a list of values, e.g. [0.1, 0.01]".into(),
            });
        }
    }
    if !axes.is_empty() {
        grid.insert("axes".into(), Value::Table(axes));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpecError::Invalid { problems })
    }
}

fn flatten(key: &str, v: Value, out: &mut Table) {
    match v {
        Value::Table(t) => {
            for (k, child) in t {
                flatten(&format!("{key}.{k}"), child, out);
            }
        }
        other => {
            out.insert(key.to_string(), other);
        }
    }
}

/// `[grid.random]`: besides `samples`, `seed` and `params`, any key is a parameter; a
/// parameter is the first table holding `dist`.
fn normalize_random(t: Table) -> Table {
    fn params_into(key: &str, v: Value, out: &mut Table) {
        match v {
            Value::Table(t) if !t.contains_key("dist") => {
                for (k, child) in t {
                    params_into(&format!("{key}.{k}"), child, out);
                }
            }
            other => {
                out.insert(key.to_string(), other);
            }
        }
    }
    let mut out = Table::new();
    let mut params = Table::new();
    for (k, v) in t {
        match (k.as_str(), v) {
            ("samples" | "seed", v) => {
                out.insert(k, v);
            }
            ("params", Value::Table(p)) => {
                for (pk, pv) in p {
                    params_into(&pk, pv, &mut params);
                }
            }
            (_, v) => params_into(&k, v, &mut params),
        }
    }
    if !params.is_empty() {
        out.insert("params".into(), Value::Table(params));
    }
    out
}

/// A value from the command line or the environment: TOML if it parses, else a string.
pub fn parse_value(raw: &str) -> Value {
    if !raw.contains('\n')
        && let Ok(mut t) = format!("v = {raw}").parse::<Table>()
        && let Some(v) = t.remove("v")
    {
        return v;
    }
    Value::String(raw.to_string())
}

/// One layer per `ORCHESTRATE_<SECTION>__<KEY>` variable whose first part is a spec key;
/// other `ORCHESTRATE_*` variables (the launcher's run identity) are not spec keys.
fn env_layers(env: impl IntoIterator<Item = (String, String)>) -> Result<Vec<Layer>, SpecError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
                let first = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
                schema::TOP_LEVEL.contains(&first.as_str())
            })
        })
        .collect();
    vars.sort();
    let mut layers = Vec::new();
    for (name, raw) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        let segs: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let mut value = parse_value(&raw);
        for seg in segs.iter().rev() {
            let mut t = Table::new();
            t.insert(seg.clone(), value);
            value = Value::Table(t);
        }
        let Value::Table(mut table) = value else {
            continue;
        };
        let origin = format!("environment variable {name}");
        normalize(&mut table, &origin)?;
        layers.push(Layer::new(origin, None, table)?);
    }
    Ok(layers)
}

/// The layer of one `--set key=value` flag.
fn set_layer(arg: &str) -> Result<Layer, SpecError> {
    let bad = |message: &str| SpecError::BadSet {
        arg: arg.into(),
        message: message.into(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. --set optimizer.lr=0.01"))?;
    let key = key.trim();
    if key.is_empty() || raw.contains('\n') {
        return Err(bad("expected KEY=VALUE, e.g. --set optimizer.lr=0.01"));
    }
    let value = parse_value(raw.trim());
    let mut table = format!("{key} = {value}")
        .parse::<Table>()
        .map_err(|_| bad("the key must be a dotted TOML key, e.g. optimizer.lr"))?;
    let origin = format!("--set {arg}");
    normalize(&mut table, &origin)?;
    Layer::new(origin, None, table)
}
