//! `GET /metrics`: every loop's [`Figures`] in the Prometheus text exposition format, encoded by the official
//! `prometheus-client` crate into a `String` the loop serves as it serves any page.
//!
//! The figures are read at the moment of the scrape from each loop's own counts (see `metrics/mod.rs`); nothing is
//! registered ahead of time, so a [`Collector`] walks them and writes each family with one `loop` label per loop.
//! Names follow Prometheus' conventions: the `wsloop_` prefix, base units (bytes, seconds) in the name, `_total` on
//! counters, and no label whose values grow with the connections (statuses and close codes come from fixed sets).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{close_label, Figures, Tally, CLOSE_SLOTS, FIRST_REFUSAL, TURN_BOUNDS_NS};

/// The `Content-Type` of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every loop's figures, as one scrape sees them.
#[derive(Debug)]
struct Loops(Vec<Arc<Figures>>);

/// The page `GET /metrics` answers with.
pub(crate) fn render(loops: &[Arc<Figures>]) -> String {
    let mut registry = Registry::with_prefix("wsloop");
    registry.register_collector(Box::new(Loops(loops.to_vec())));
    let mut page = String::with_capacity(8 << 10);
    prometheus_client::encoding::prometheus_text::encode(&mut page, &registry)
        .expect("writing to a String does not fail");
    page
}

/// How a figure is read off one loop.
type Read = fn(&Figures) -> &Tally;

impl Loops {
    fn labels(&self) -> Vec<[(&'static str, String); 1]> {
        (0..self.0.len())
            .map(|i| [("loop", i.to_string())])
            .collect()
    }

    /// One family of counters or gauges, one sample per loop.
    fn plain(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, unit, kind): (&str, &str, Option<Unit>, MetricType),
        read: Read,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for (figures, labels) in self.0.iter().zip(self.labels()) {
            let value = read(figures).get();
            let sample = family.encode_family(&labels)?;
            match kind {
                MetricType::Gauge => ConstGauge::new(value as i64).encode(sample)?,
                _ => ConstCounter::new(value).encode(sample)?,
            }
        }
        Ok(())
    }

    /// One family of counters with a second label from a fixed set (`slots` lists its values); a slot no loop has
    /// counted anything in is left out.
    fn labelled(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, label): (&str, &str, &'static str),
        slots: &[String],
        read: impl Fn(&Figures, usize) -> &Tally,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (slot, value) in slots.iter().enumerate() {
            if self.0.iter().all(|f| read(f, slot).get() == 0) {
                continue;
            }
            for (i, figures) in self.0.iter().enumerate() {
                let labels = [("loop", i.to_string()), (label, value.clone())];
                ConstCounter::new(read(figures, slot).get())
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn turns(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "loop_turn",
            "Time one turn of the loop takes, from the poll's return to the end of its writes",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (figures, labels) in self.0.iter().zip(self.labels()) {
            // Each bucket's own count: the encoder adds them up into Prometheus' cumulative `le` buckets.
            let buckets: Vec<(f64, u64)> = figures
                .turns
                .iter()
                .enumerate()
                .map(|(i, turns)| {
                    let bound = TURN_BOUNDS_NS
                        .get(i)
                        .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
                    (bound, turns.get())
                })
                .collect();
            let count = buckets.iter().map(|(_, n)| n).sum();
            let sum = figures.turn_ns.get() as f64 / 1e9;
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

impl Collector for Loops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let families: [(&str, &str, Option<Unit>, MetricType, Read); 14] = [
            (
                "connections",
                "Connections held: in their handshake, open or closing",
                None,
                Gauge,
                |f| &f.connections,
            ),
            (
                "users",
                "Connections open for messages (what max_users limits)",
                None,
                Gauge,
                |f| &f.users,
            ),
            (
                "connections_accepted",
                "Connections accepted",
                None,
                Counter,
                |f| &f.accepted,
            ),
            (
                "connections_shed",
                "Connections closed at once because max_pending were waiting",
                None,
                Counter,
                |f| &f.shed,
            ),
            (
                "handshakes",
                "WebSocket handshakes completed",
                None,
                Counter,
                |f| &f.handshakes,
            ),
            (
                "messages_received",
                "Messages received (text and binary, fragments joined)",
                None,
                Counter,
                |f| &f.messages_in,
            ),
            (
                "messages_sent",
                "Messages queued to a connection (a broadcast counts once per receiver)",
                None,
                Counter,
                |f| &f.messages_out,
            ),
            (
                "received",
                "Bytes read: requests and frames, after TLS",
                Some(Unit::Bytes),
                Counter,
                |f| &f.bytes_in,
            ),
            (
                "sent",
                "Bytes written: responses and frames, before TLS",
                Some(Unit::Bytes),
                Counter,
                |f| &f.bytes_out,
            ),
            (
                "slow_readers_dropped",
                "Connections closed with 1008 for having more than max_buffered queued",
                None,
                Counter,
                |f| &f.dropped_slow,
            ),
            (
                "over_budget_closed",
                "Connections closed because the loop held more than its share of max_memory",
                None,
                Counter,
                |f| &f.over_budget,
            ),
            (
                "tls_failures",
                "Connections dropped because their TLS failed",
                None,
                Counter,
                |f| &f.tls_failed,
            ),
            (
                "queued",
                "Bytes waiting for connections that could not take them yet",
                Some(Unit::Bytes),
                Gauge,
                |f| &f.queued,
            ),
            (
                "memory_held",
                "Bytes held against max_memory: messages arriving and data queued",
                Some(Unit::Bytes),
                Gauge,
                |f| &f.held,
            ),
        ];
        for (name, help, unit, kind, read) in families {
            self.plain(&mut encoder, (name, help, unit, kind), read)?;
        }
        let statuses: Vec<String> = (0..200).map(|i| (FIRST_REFUSAL + i).to_string()).collect();
        self.labelled(
            &mut encoder,
            (
                "handshakes_refused",
                "Handshakes refused, by the HTTP status answered",
                "status",
            ),
            &statuses,
            |f, slot| &f.refused[slot],
        )?;
        let codes: Vec<String> = (0..CLOSE_SLOTS).map(close_label).collect();
        self.labelled(
            &mut encoder,
            (
                "closes_received",
                "Close frames received, by code (1005: none given)",
                "code",
            ),
            &codes,
            |f, slot| &f.closes_in[slot],
        )?;
        self.labelled(
            &mut encoder,
            (
                "closes_sent",
                "Close frames sent, by code (1005: none given)",
                "code",
            ),
            &codes,
            |f, slot| &f.closes_out[slot],
        )?;
        self.turns(&mut encoder)
    }
}
