//! Topics (rooms): which connections of one loop hold which topic, and the other way round.
//!
//! The PHP tutorial had one room, "everyone", and sent to it by walking the whole sockets array. A topic is a named
//! room inside the loop: a connection subscribes, a publish reaches exactly the topic's subscribers. Nothing in this
//! module touches a socket; the loop asks it who is subscribed and queues the frame for them.
//!
//! Costs a caller can rely on: a topic nobody holds holds no memory (it is removed with its last subscriber, and the
//! maps give memory back as they empty); subscribe and unsubscribe look at one topic and one connection only, never
//! scan others; listing a topic's subscribers walks that topic's set alone. A connection's subscriptions are kept
//! here, out of line, so a connection that holds no topic costs nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The subscriptions of one loop, by topic and by connection (slab key).
#[derive(Default)]
pub(crate) struct Topics {
    /// Topic to the slab keys of its subscribers. A topic is here only while it has one.
    subscribers: HashMap<Arc<str>, HashSet<usize>>,
    /// Slab key to the topics it holds. A connection is here only while it holds one.
    held: HashMap<usize, Vec<Arc<str>>>,
}

impl Topics {
    /// Subscribes `key` to `topic`. Returns false if it already was.
    pub fn subscribe(&mut self, key: usize, topic: &str) -> bool {
        // One name per topic, shared by both maps.
        let name = match self.subscribers.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Arc::from(topic),
        };
        if !self
            .subscribers
            .entry(name.clone())
            .or_default()
            .insert(key)
        {
            return false;
        }
        self.held.entry(key).or_default().push(name);
        true
    }

    /// Unsubscribes `key` from `topic`. Returns false if it was not subscribed.
    pub fn unsubscribe(&mut self, key: usize, topic: &str) -> bool {
        let Some(set) = self.subscribers.get_mut(topic) else {
            return false;
        };
        if !set.remove(&key) {
            return false;
        }
        if set.is_empty() {
            self.subscribers.remove(topic);
            shrink(&mut self.subscribers);
        } else {
            shrink_set(set);
        }
        if let Some(topics) = self.held.get_mut(&key) {
            // Only this connection's own topics are looked at.
            if let Some(i) = topics.iter().position(|t| &**t == topic) {
                topics.swap_remove(i);
            }
            if topics.is_empty() {
                self.held.remove(&key);
                shrink(&mut self.held);
            }
        }
        true
    }

    /// Ends every subscription of `key` (its connection is closing); `emptied` is called with each topic it was the
    /// last subscriber of. Returns how many it held.
    pub fn leave(&mut self, key: usize, mut emptied: impl FnMut(&str)) -> usize {
        let Some(topics) = self.held.remove(&key) else {
            return 0;
        };
        shrink(&mut self.held);
        for topic in &topics {
            if let Some(set) = self.subscribers.get_mut(topic) {
                set.remove(&key);
                if set.is_empty() {
                    self.subscribers.remove(topic);
                    emptied(topic);
                } else {
                    shrink_set(set);
                }
            }
        }
        shrink(&mut self.subscribers);
        topics.len()
    }

    /// The slab keys subscribed to `topic`, in no particular order.
    pub fn subscribers(&self, topic: &str) -> impl Iterator<Item = usize> + '_ {
        self.subscribers.get(topic).into_iter().flatten().copied()
    }

    /// How many connections hold `topic`.
    pub fn count(&self, topic: &str) -> usize {
        self.subscribers.get(topic).map_or(0, HashSet::len)
    }

    /// The topics `key` holds.
    #[cfg(test)]
    pub fn of(&self, key: usize) -> impl Iterator<Item = &str> + '_ {
        self.held.get(&key).into_iter().flatten().map(|t| &**t)
    }

    /// Topics with at least one subscriber.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Room the two maps have allocated, in entries: what stays held once topics are emptied.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.subscribers.capacity() + self.held.capacity()
    }
}

/// Gives memory back once a map is mostly empty, so that 10,000 topics created and emptied leave nothing behind.
/// Halving only below a quarter keeps the cost amortized: a map never shrinks and regrows on alternate calls.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 16 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

fn shrink_set(set: &mut HashSet<usize>) {
    if set.capacity() > 16 && set.len() * 4 < set.capacity() {
        set.shrink_to(set.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(topics: &Topics, topic: &str) -> Vec<usize> {
        let mut keys: Vec<usize> = topics.subscribers(topic).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn subscribe_publish_unsubscribe() {
        let mut t = Topics::default();
        assert!(t.subscribe(1, "news"));
        assert!(t.subscribe(2, "news"));
        assert!(
            !t.subscribe(1, "news"),
            "a second subscribe changes nothing"
        );
        assert!(t.subscribe(1, "sport"));
        assert_eq!(sorted(&t, "news"), [1, 2]);
        assert_eq!(sorted(&t, "sport"), [1]);
        assert_eq!(t.count("news"), 2);
        assert!(t.unsubscribe(1, "news"));
        assert!(!t.unsubscribe(1, "news"));
        assert_eq!(sorted(&t, "news"), [2]);
        assert_eq!(t.of(1).collect::<Vec<_>>(), ["sport"]);
    }

    #[test]
    fn a_topic_nobody_holds_is_gone() {
        let mut t = Topics::default();
        assert_eq!(t.subscribers("nobody").count(), 0);
        assert!(!t.unsubscribe(3, "nobody"));
        t.subscribe(3, "room");
        t.unsubscribe(3, "room");
        assert_eq!(t.len(), 0);
        assert_eq!(t.of(3).count(), 0);
    }

    #[test]
    fn leaving_ends_every_subscription_of_that_connection_only() {
        let mut t = Topics::default();
        for topic in ["a", "b", "c"] {
            t.subscribe(7, topic);
        }
        t.subscribe(8, "b");
        let mut emptied = Vec::new();
        assert_eq!(t.leave(7, |topic| emptied.push(topic.to_string())), 3);
        emptied.sort();
        assert_eq!(emptied, ["a", "c"], "b is still held by 8");
        assert_eq!(t.leave(7, |_| panic!("nothing left")), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(sorted(&t, "b"), [8]);
    }

    #[test]
    fn ten_thousand_topics_created_and_emptied_leave_no_memory() {
        let mut t = Topics::default();
        for round in 0..3 {
            for i in 0..10_000 {
                t.subscribe(i % 100, &format!("topic-{i}"));
            }
            assert_eq!(t.len(), 10_000);
            assert!(t.capacity() >= 10_000);
            for i in 0..10_000 {
                if round == 2 && i % 100 == 0 {
                    continue; // the last round leaves via `leave`
                }
                assert!(t.unsubscribe(i % 100, &format!("topic-{i}")));
            }
            if round == 2 {
                for key in 0..100 {
                    t.leave(key, |_| {});
                }
            }
            assert_eq!(t.len(), 0);
            assert!(
                t.capacity() <= 64,
                "round {round}: {} entries still allocated",
                t.capacity()
            );
        }
    }

    #[test]
    fn a_large_topic_shrinks_as_it_empties() {
        let mut t = Topics::default();
        for key in 0..10_000 {
            t.subscribe(key, "lobby");
        }
        for key in 1..10_000 {
            t.unsubscribe(key, "lobby");
        }
        assert_eq!(sorted(&t, "lobby"), [0]);
        assert!(t.subscribers.get("lobby").unwrap().capacity() <= 64);
    }
}
