//! `GET /stats`: the live stats page, and the figures the loop pushes to it once a second.
//!
//! The page (`stats.html`: HTML, CSS and JavaScript, its plots drawn on a canvas by its own code, nothing from a
//! CDN) opens a WebSocket to `/stats` on the same host and draws what arrives. Each message is one JSON object:
//!
//! ```text
//! {"type":"stats","time":1764000000000,"loops":2,"connections":12,"users":10,"messages_in":5310,
//!  "messages_out":40211,"bytes_in":301112,"bytes_out":2210932,"queued":0,"dropped_slow":0,"turn_p99":0.000025}
//! ```
//!
//! `time` is the server's clock in milliseconds since 1970; the `messages_*` and `bytes_*` figures are totals since
//! the server started (the page plots their differences per second); `turn_p99` is the 99th percentile of the loops'
//! turn times over the last second, in seconds, as the upper bound of its histogram bucket (`null` if no turn
//! ended, `"+Inf"` past the last bound, one second).

use super::Sum;

/// The page.
pub(crate) const PAGE: &str = include_str!("stats.html");

/// One push of the figures.
pub(crate) fn json(sum: &Sum, turn_p99: Option<f64>, time_ms: u128, loops: usize) -> String {
    let p99 = match turn_p99 {
        None => "null".to_string(),
        Some(s) if s.is_infinite() => "\"+Inf\"".to_string(),
        Some(s) => format!("{s}"),
    };
    format!(
        concat!(
            r#"{{"type":"stats","time":{},"loops":{},"connections":{},"users":{},"messages_in":{},"#,
            r#""messages_out":{},"bytes_in":{},"bytes_out":{},"queued":{},"dropped_slow":{},"turn_p99":{}}}"#
        ),
        time_ms,
        loops,
        sum.connections,
        sum.users,
        sum.messages_in,
        sum.messages_out,
        sum.bytes_in,
        sum.bytes_out,
        sum.queued,
        sum.dropped_slow,
        p99
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_is_one_json_object_with_every_figure() {
        let sum = Sum {
            connections: 3,
            users: 2,
            messages_in: 10,
            messages_out: 20,
            bytes_in: 300,
            bytes_out: 400,
            queued: 5,
            dropped_slow: 1,
            ..Sum::default()
        };
        let text = json(&sum, Some(25e-6), 1_700_000_000_123, 2);
        assert_eq!(
            text,
            r#"{"type":"stats","time":1700000000123,"loops":2,"connections":3,"users":2,"messages_in":10,"messages_out":20,"bytes_in":300,"bytes_out":400,"queued":5,"dropped_slow":1,"turn_p99":0.000025}"#
        );
        assert!(json(&sum, None, 0, 1).ends_with(r#""turn_p99":null}"#));
        assert!(json(&sum, Some(f64::INFINITY), 0, 1).ends_with(r#""turn_p99":"+Inf"}"#));
    }
}
