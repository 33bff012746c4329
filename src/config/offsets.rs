//! Starting and ending offsets in Spark's `startingOffsets` form.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Deserialize;

/// Where a partition without a stored offset starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced after the partition is assigned.
    Latest,
    /// Per topic and partition; partitions not listed start at earliest.
    Specific(BTreeMap<String, BTreeMap<i32, OffsetSpec>>),
}

/// One partition's starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// `-2` in Spark's JSON.
    Earliest,
    /// `-1` in Spark's JSON.
    Latest,
    /// An absolute offset.
    Offset(i64),
}

impl StartingOffsets {
    /// The start for one partition that has no stored offset.
    pub fn for_partition(&self, topic: &str, partition: i32) -> OffsetSpec {
        match self {
            StartingOffsets::Earliest => OffsetSpec::Earliest,
            StartingOffsets::Latest => OffsetSpec::Latest,
            StartingOffsets::Specific(m) => m
                .get(topic)
                .and_then(|p| p.get(&partition))
                .copied()
                .unwrap_or(OffsetSpec::Earliest),
        }
    }
}

/// Parses Spark's per-partition offsets JSON: `{"topic":{"0":23,"1":-2}}`.
pub(crate) fn parse_offsets_json(
    s: &str,
) -> Result<BTreeMap<String, BTreeMap<i32, OffsetSpec>>, String> {
    let raw: BTreeMap<String, BTreeMap<String, i64>> = serde_json::from_str(s).map_err(|e| {
        format!(r#"not valid offsets JSON ({e}); expected e.g. {{"events":{{"0":42,"1":-2}}}}"#)
    })?;
    let mut out = BTreeMap::new();
    for (topic, parts) in raw {
        let mut m = BTreeMap::new();
        for (p, o) in parts {
            let part: i32 = p
                .parse()
                .map_err(|_| format!("partition `{p}` of topic `{topic}` is not a number"))?;
            let spec = match o {
                -2 => OffsetSpec::Earliest,
                -1 => OffsetSpec::Latest,
                o if o >= 0 => OffsetSpec::Offset(o),
                o => {
                    return Err(format!(
                        "offset {o} for {topic}/{part} is invalid; use -2 (earliest), -1 (latest) or an offset >= 0"
                    ))
                }
            };
            m.insert(part, spec);
        }
        out.insert(topic, m);
    }
    Ok(out)
}

impl FromStr for StartingOffsets {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "earliest" => Ok(StartingOffsets::Earliest),
            "latest" => Ok(StartingOffsets::Latest),
            t if t.starts_with('{') => parse_offsets_json(t).map(StartingOffsets::Specific),
            other => Err(format!(
                "`{other}` is not a starting offset; use earliest, latest or per-partition JSON like {{\"events\":{{\"0\":42}}}}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for StartingOffsets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keywords_and_json() {
        assert_eq!(
            "earliest".parse::<StartingOffsets>().unwrap(),
            StartingOffsets::Earliest
        );
        assert_eq!(
            "latest".parse::<StartingOffsets>().unwrap(),
            StartingOffsets::Latest
        );
        let s: StartingOffsets = r#"{"events":{"0":23,"1":-2,"2":-1}}"#.parse().unwrap();
        assert_eq!(s.for_partition("events", 0), OffsetSpec::Offset(23));
        assert_eq!(s.for_partition("events", 1), OffsetSpec::Earliest);
        assert_eq!(s.for_partition("events", 2), OffsetSpec::Latest);
        assert_eq!(s.for_partition("events", 3), OffsetSpec::Earliest);
        assert_eq!(s.for_partition("other", 0), OffsetSpec::Earliest);
    }

    #[test]
    fn rejects_bad_values() {
        assert!("earlist".parse::<StartingOffsets>().is_err());
        assert!(r#"{"events":{"x":1}}"#.parse::<StartingOffsets>().is_err());
        assert!(r#"{"events":{"0":-5}}"#.parse::<StartingOffsets>().is_err());
    }
}

/// One end of a replay range, as Spark writes it: per-partition offsets JSON
/// (`startingOffsets` / `endingOffsets`) or one timestamp for every partition
/// (`startingTimestamp` / `endingTimestamp`, milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeBound {
    /// Per topic and partition.
    Offsets(BTreeMap<String, BTreeMap<i32, OffsetSpec>>),
    /// The first offset whose timestamp is at or after this instant.
    Timestamp(i64),
}

impl FromStr for RangeBound {
    type Err = String;

    /// Offsets JSON (`{"events":{"0":100}}`), or a timestamp: milliseconds
    /// since the epoch or an RFC 3339 date-time.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.starts_with('{') {
            return parse_offsets_json(t).map(RangeBound::Offsets);
        }
        if let Ok(ms) = t.parse::<i64>() {
            return Ok(RangeBound::Timestamp(ms));
        }
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| RangeBound::Timestamp(d.timestamp_millis()))
            .map_err(|_| {
                format!(
                    "`{t}` is neither offsets JSON like {{\"events\":{{\"0\":100}}}} nor a timestamp \
                     (epoch milliseconds or RFC 3339, e.g. 2024-05-01T00:00:00Z)"
                )
            })
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn parses_offsets_and_timestamps() {
        let b: RangeBound = r#"{"events":{"0":100,"1":-1}}"#.parse().unwrap();
        let RangeBound::Offsets(m) = b else { panic!() };
        assert_eq!(m["events"][&0], OffsetSpec::Offset(100));
        assert_eq!(m["events"][&1], OffsetSpec::Latest);
        assert_eq!(
            "1714521600000".parse::<RangeBound>().unwrap(),
            RangeBound::Timestamp(1_714_521_600_000)
        );
        assert_eq!(
            "2024-05-01T00:00:00Z".parse::<RangeBound>().unwrap(),
            RangeBound::Timestamp(1_714_521_600_000)
        );
        assert!("yesterday".parse::<RangeBound>().is_err());
    }
}
