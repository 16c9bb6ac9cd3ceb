//! [`check_text_format`]: the rules of the Prometheus text exposition format (0.0.4) that a
//! scraper enforces, for tests of `/metrics`; [`check_described`]: every family says what it
//! counts.

use std::collections::{BTreeMap, BTreeSet};

/// A sample: its metric name, its labels in order, its value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks that every family `text` declares with `# TYPE` also has a `# HELP`, so an operator
/// reading `/metrics` needs no source code to know what a number counts.
///
/// # Errors
/// The first family without a `# HELP`.
pub fn check_described(text: &str) -> Result<(), String> {
    let described: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split(' ').next())
            && !described.contains(name)
        {
            return Err(format!("{name} has a # TYPE but no # HELP"));
        }
    }
    Ok(())
}

/// Checks `text` as Prometheus would parse it:
///
/// - every line is a comment, a `# HELP` / `# TYPE`, or a sample `name{labels} value`, with
///   valid names, quoted and escaped label values and a float value;
/// - a family's `# HELP` and `# TYPE` appear once each, before its samples, and a family's
///   samples are contiguous;
/// - no series appears twice;
/// - each histogram series has its buckets in increasing `le` order ending with `+Inf`,
///   cumulative counts that never decrease, a `_sum`, and a `_count` equal to `+Inf`.
///
/// # Errors
/// The first broken rule, with its line.
pub fn check_text_format(text: &str) -> Result<(), String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut samples: Vec<(String, Sample)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            let (kind, name) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            match kind {
                "HELP" | "TYPE" => {
                    check_name(name).map_err(|e| at(&e))?;
                    if finished.contains(name) || current.as_deref() == Some(name) {
                        return Err(at("metadata after the family's samples"));
                    }
                    if kind == "HELP" && !helps.insert(name.to_owned()) {
                        return Err(at("a second # HELP"));
                    }
                    if kind == "TYPE" {
                        let ty = words.next().unwrap_or("").trim();
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                            return Err(at("an unknown type"));
                        }
                        if types.insert(name.to_owned(), ty.to_owned()).is_some() {
                            return Err(at("a second # TYPE"));
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| at(&e))?;
        let family = family_of(&sample.0, &types);
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at("the family's samples are not contiguous"));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished.insert(previous);
            }
        }
        let series = format!("{}{:?}", sample.0, sample.1);
        if !seen.insert(series) {
            return Err(at("a series given twice"));
        }
        samples.push((family, sample));
    }
    for (family, ty) in &types {
        if ty == "histogram" {
            check_histogram(family, &samples)?;
        }
    }
    Ok(())
}

/// The family a sample belongs to: a histogram's or summary's for its suffixed series.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn check_histogram(family: &str, samples: &[(String, Sample)]) -> Result<(), String> {
    type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut by_labels: BTreeMap<String, Series> = BTreeMap::new();
    for (_, (name, labels, value)) in samples.iter().filter(|(f, _)| f == family) {
        let rest: Vec<&(String, String)> = labels.iter().filter(|(k, _)| k != "le").collect();
        let entry = by_labels.entry(format!("{rest:?}")).or_default();
        match name.strip_prefix(family) {
            Some("_bucket") => {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or_else(|| format!("{name}: a bucket without le"))?;
                let bound = parse_float(&le.1).ok_or_else(|| format!("{name}: le {:?}", le.1))?;
                entry.0.push((bound, *value));
            }
            Some("_sum") => entry.1 = Some(*value),
            Some("_count") => entry.2 = Some(*value),
            _ => return Err(format!("{name}: not a histogram series of {family}")),
        }
    }
    for (labels, (buckets, sum, count)) in by_labels {
        let what = format!("{family}{labels}");
        if buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(format!("{what}: buckets out of le order"));
        }
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(format!("{what}: bucket counts decrease"));
        }
        let last = buckets.last().ok_or_else(|| format!("{what}: no bucket"))?;
        if last.0 != f64::INFINITY {
            return Err(format!("{what}: no +Inf bucket"));
        }
        if sum.is_none() {
            return Err(format!("{what}: no _sum"));
        }
        if count != Some(last.1) {
            return Err(format!(
                "{what}: _count {count:?} is not the +Inf bucket {}",
                last.1
            ));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("an invalid metric name {name:?}"))
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "a sample without a value".to_owned())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut end = None;
        loop {
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            check_name(&key).map_err(|_| format!("an invalid label name {key:?}"))?;
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} is not quoted"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("a bad escape \\{other:?}")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\n' => return Err("a raw newline in a label".into()),
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label {key}'s value is not closed"));
            }
            labels.push((key, value));
        }
        let end = end.ok_or_else(|| "labels not closed".to_owned())?;
        rest = &after[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .and_then(parse_float)
        .ok_or_else(|| "no float value".to_owned())?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err("a bad timestamp".into());
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_owned(), labels, value))
}

#[cfg(test)]
mod tests {
    use super::check_text_format;

    #[test]
    fn good_text_passes_and_each_broken_rule_is_caught() {
        let good = "# HELP h Latency.\n# TYPE h histogram\n\
                    h_bucket{ns=\"a\",le=\"0.1\"} 1\nh_bucket{ns=\"a\",le=\"+Inf\"} 2\n\
                    h_sum{ns=\"a\"} 0.3\nh_count{ns=\"a\"} 2\n\
                    # TYPE c_total counter\nc_total{x=\"q\\\"\"} 4\n";
        assert_eq!(check_text_format(good), Ok(()));
        for bad in [
            // Buckets out of order.
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_bucket{le=\"0.1\"} 1\nh_sum 1\nh_count 2\n",
            // _count disagrees with +Inf.
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
            // Two TYPE lines.
            "# TYPE c counter\n# TYPE c counter\nc 1\n",
            // A family split in two.
            "a 1\nb 1\na{x=\"1\"} 1\n",
            // A duplicate series, a bad name, an unquoted label, no value.
            "a 1\na 1\n",
            "1a 1\n",
            "a{x=1} 1\n",
            "a{x=\"1\"}\n",
        ] {
            assert!(check_text_format(bad).is_err(), "passed: {bad}");
        }
    }
}
