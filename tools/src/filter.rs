//! Checked filters: raw flags resolved (times parsed, kinds known).

use anyhow::{Context, Result, bail};
use waymark_engine::{Event, Lsn};

use crate::cli::FilterArgs;

/// Every event kind, as `Event::kind` names them.
pub const KINDS: [&str; 12] = [
    "put",
    "delete",
    "clear_task",
    "task_put",
    "task_delete",
    "task_status",
    "run_status",
    "checkpoint",
    "restore_checkpoint",
    "shared_put",
    "purge_run",
    "delete_checkpoint",
];

/// Which events a listing shows.
#[derive(Debug, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub dag: Option<String>,
    pub run: Option<String>,
    pub task: Option<String>,
    pub try_number: Option<u32>,
    pub key: Option<String>,
    pub kind: Option<String>,
    pub from_lsn: Lsn,
    pub to_lsn: Option<Lsn>,
    pub since_micros: Option<i64>,
    pub until_micros: Option<i64>,
    pub limit: Option<usize>,
    pub reverse: bool,
}

/// A time given as RFC 3339 or relative to now ("10m", "2 days ago",
/// "1h30m"), in microseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts.as_microsecond());
    }
    let span: jiff::Span = text.parse().with_context(|| {
        format!("{text:?} is neither RFC 3339 nor a relative time like \"10m\" or \"2 days ago\"")
    })?;
    let then = jiff::Zoned::now()
        .checked_sub(span.abs())
        .with_context(|| format!("{text:?} reaches outside the calendar"))?;
    Ok(then.timestamp().as_microsecond())
}

impl Filter {
    /// Checks raw flags.
    pub fn from_args(a: FilterArgs) -> Result<Filter> {
        if let Some(kind) = &a.kind
            && !KINDS.contains(&kind.as_str())
        {
            bail!(
                "unknown event kind {kind:?}; known kinds: {}",
                KINDS.join(", ")
            );
        }
        if let (Some(from), Some(to)) = (a.from_lsn, a.to_lsn)
            && from > to
        {
            bail!("--from-lsn {from} is after --to-lsn {to}");
        }
        Ok(Filter {
            tenant: a.tenant,
            dag: a.dag,
            run: a.run,
            task: a.task,
            try_number: a.try_number,
            key: a.key,
            kind: a.kind,
            from_lsn: Lsn(a.from_lsn.unwrap_or(1).max(1)),
            to_lsn: a.to_lsn.map(Lsn),
            since_micros: a.since.as_deref().map(parse_time).transpose()?,
            until_micros: a.until.as_deref().map(parse_time).transpose()?,
            limit: a.limit,
            reverse: a.reverse,
        })
    }

    /// Whether `event` (in the batch `lsn`) passes.
    pub fn matches(&self, lsn: Lsn, event: &Event) -> bool {
        let run = event.run();
        lsn >= self.from_lsn
            && self.to_lsn.is_none_or(|to| lsn <= to)
            && self.tenant.as_ref().is_none_or(|t| *t == run.tenant)
            && self.dag.as_ref().is_none_or(|d| *d == run.dag)
            && self.run.as_ref().is_none_or(|r| *r == run.run)
            && self.task.as_deref().is_none_or(|t| event.task() == Some(t))
            && self
                .try_number
                .is_none_or(|n| event.try_number() == Some(n))
            && self.key.as_deref().is_none_or(|k| event.key() == Some(k))
            && self.kind.as_deref().is_none_or(|k| event.kind() == k)
            && self.since_micros.is_none_or(|t| event.ts_micros >= t)
            && self.until_micros.is_none_or(|t| event.ts_micros <= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_absolute_and_relative() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        let now = jiff::Timestamp::now().as_microsecond();
        let ten_min = parse_time("10m").unwrap();
        assert!((now - ten_min - 600_000_000).abs() < 5_000_000);
        let two_days = parse_time("2 days ago").unwrap();
        assert!((now - two_days - 2 * 86_400_000_000).abs() < 3_600_000_000 + 5_000_000);
        assert!(parse_time("yesterday-ish").is_err());
    }
}
