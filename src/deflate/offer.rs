//! The permessage-deflate offer and answer (RFC 7692 §7), read from `Sec-WebSocket-Extensions` (RFC 6455 §9.1).
//!
//! The key rule: whatever a client sends, the worst outcome is a declined extension. A malformed header declines it
//! (the handshake goes on without compression), an offer the server cannot honour is skipped for the next one, and
//! nothing here panics, indexes or unwraps on the peer's bytes.

use std::borrow::Cow;

use super::{Deflate, EXTENSION, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";
/// RFC 7692 §7: the only parameters an offer may carry.
const PARAMS: [&str; 4] = [
    SERVER_NO_CONTEXT_TAKEOVER,
    CLIENT_NO_CONTEXT_TAKEOVER,
    SERVER_MAX_WINDOW_BITS,
    CLIENT_MAX_WINDOW_BITS,
];

/// What one connection agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The server starts every message with a fresh compressor.
    pub server_no_context_takeover: bool,
    /// The client starts every message with a fresh compressor (the answer said client_no_context_takeover).
    pub client_no_context_takeover: bool,
    /// The window the server compresses with, 8..=15 (8: the loop will use a stream without back-references).
    pub server_max_window_bits: u8,
    /// The largest window the client may compress with (15 when nothing limits it).
    pub client_max_window_bits: u8,
}

/// Reads the values of every `Sec-WebSocket-Extensions` header of a request (in order; several headers are one
/// comma-separated list, RFC 7230 §3.2.2) and accepts the first permessage-deflate offer the server can honour under
/// `settings`. Returns what was agreed and the value of the response's `Sec-WebSocket-Extensions` header, or `None`
/// to decline the extension (the handshake goes on without it).
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    settings: &Deflate,
) -> Option<(Params, String)> {
    let mut extensions = Vec::new();
    for value in headers {
        extensions.extend(parse_list(value)?);
    }
    extensions
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION))
        .find_map(|e| Offer::read(&e.params))
        .map(|offer| offer.answer(settings))
}

/// One element of an extension list (RFC 6455 §9.1), its parameter values unquoted.
struct Extension<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

/// `1#extension` (RFC 6455 §9.1, RFC 7230 §7: empty elements are skipped), or `None` if the value is malformed.
fn parse_list(value: &str) -> Option<Vec<Extension<'_>>> {
    let mut cursor = Cursor {
        text: value,
        pos: 0,
    };
    let mut list = Vec::new();
    loop {
        cursor.skip_ows();
        match cursor.peek() {
            None => return Some(list),
            Some(b',') => cursor.pos += 1,
            Some(_) => {
                list.push(cursor.extension()?);
                cursor.skip_ows();
                match cursor.next() {
                    None => return Some(list),
                    Some(b',') => {}
                    Some(_) => return None,
                }
            }
        }
    }
}

/// A position in a header value; every step checks its bounds, so a short or odd value ends in `None`.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    /// Consumes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    /// RFC 7230 §3.2.3: `OWS = *( SP / HTAB )`.
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// `token = 1*tchar` (RFC 7230 §3.2.6).
    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // Every byte taken is ASCII, so `pos` is a char boundary; `get` says so without a panic path.
        self.text.get(start..self.pos).filter(|t| !t.is_empty())
    }

    /// `quoted-string` (RFC 7230 §3.2.6) after its opening quote, with `\` escapes undone.
    fn quoted(&mut self) -> Option<String> {
        let mut content = Vec::new();
        loop {
            match self.next()? {
                b'"' => return String::from_utf8(content).ok(),
                b'\\' => {
                    // `quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )`.
                    let byte = self
                        .next()
                        .filter(|&b| is_qtext(b) || b == b'"' || b == b'\\')?;
                    content.push(byte);
                }
                b if is_qtext(b) => content.push(b),
                _ => return None,
            }
        }
    }

    /// `extension = extension-token *( ";" extension-param )`, `extension-param = token [ "=" (token |
    /// quoted-string) ]` (RFC 6455 §9.1), with optional whitespace around `;` and `=`.
    fn extension(&mut self) -> Option<Extension<'a>> {
        let name = self.token()?;
        let mut params = Vec::new();
        loop {
            self.skip_ows();
            if !self.eat(b';') {
                return Some(Extension { name, params });
            }
            self.skip_ows();
            let key = self.token()?;
            self.skip_ows();
            let value = if self.eat(b'=') {
                self.skip_ows();
                Some(if self.eat(b'"') {
                    Cow::Owned(self.quoted()?)
                } else {
                    Cow::Borrowed(self.token()?)
                })
            } else {
                None
            };
            params.push((key, value));
        }
    }
}

/// RFC 7230 §3.2.6: `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" /
/// "~" / DIGIT / ALPHA`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 7230 §3.2.6: `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`.
fn is_qtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// RFC 7692 §7.1.2.1: a window is a decimal integer 8..=15 without leading zeros. A quoted value counts by its
/// content (RFC 6455 §9.1), and one that is not a token cannot spell a number.
fn window(value: &str) -> Option<u8> {
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).find(|bits| bits.to_string() == value)
}

/// What one permessage-deflate offer asked for.
#[derive(Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value, "you may limit my window".
    client_max_window_bits: Option<Option<u8>>,
}

impl Offer {
    /// The offer, or `None` to decline it (RFC 7692 §7: an unknown parameter, one given twice, or an invalid value).
    fn read(params: &[(&str, Option<Cow<'_, str>>)]) -> Option<Offer> {
        let mut offer = Offer::default();
        let mut seen = Vec::new();
        for (name, value) in params {
            let name = *PARAMS.iter().find(|p| p.eq_ignore_ascii_case(name))?;
            if seen.contains(&name) {
                return None;
            }
            seen.push(name);
            match (name, value.as_deref()) {
                // §7.1.1.1, §7.1.1.2: these take no value.
                (SERVER_NO_CONTEXT_TAKEOVER, None) => offer.server_no_context_takeover = true,
                (CLIENT_NO_CONTEXT_TAKEOVER, None) => offer.client_no_context_takeover = true,
                // §7.1.2.1: this one must have a value.
                (SERVER_MAX_WINDOW_BITS, Some(v)) => {
                    offer.server_max_window_bits = Some(window(v)?)
                }
                // §7.1.2.2: this one may have a value.
                (CLIENT_MAX_WINDOW_BITS, None) => offer.client_max_window_bits = Some(None),
                (CLIENT_MAX_WINDOW_BITS, Some(v)) => {
                    offer.client_max_window_bits = Some(Some(window(v)?))
                }
                _ => return None,
            }
        }
        Some(offer)
    }

    /// The answer to an offer the server accepts, and what it agrees to.
    fn answer(&self, settings: &Deflate) -> (Params, String) {
        let bounded = |bits: u8| bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        // §7.1.1.1, §7.1.1.2: the server may add either on its own, but must echo one that was offered.
        let server_no_context_takeover =
            self.server_no_context_takeover || !settings.server_context_takeover;
        let client_no_context_takeover =
            self.client_no_context_takeover || !settings.client_context_takeover;
        // §7.1.2.1: the server window is the same as or smaller than the offered one.
        let server_bits = bounded(settings.server_max_window_bits)
            .min(self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS));
        // §7.1.2.2: the client window may be limited only if the offer had the parameter, and not above its value.
        let client_bits = match self.client_max_window_bits {
            Some(offered) => {
                bounded(settings.client_max_window_bits).min(offered.unwrap_or(MAX_WINDOW_BITS))
            }
            None => MAX_WINDOW_BITS,
        };
        let mut answer = EXTENSION.to_owned();
        if server_no_context_takeover {
            answer += &format!("; {SERVER_NO_CONTEXT_TAKEOVER}");
        }
        if client_no_context_takeover {
            answer += &format!("; {CLIENT_NO_CONTEXT_TAKEOVER}");
        }
        if self.server_max_window_bits.is_some() || server_bits < MAX_WINDOW_BITS {
            answer += &format!("; {SERVER_MAX_WINDOW_BITS}={server_bits}");
        }
        if matches!(self.client_max_window_bits, Some(Some(_))) || client_bits < MAX_WINDOW_BITS {
            answer += &format!("; {CLIENT_MAX_WINDOW_BITS}={client_bits}");
        }
        let params = Params {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        };
        (params, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults: no context takeover on either side, full windows.
    const NONE: Deflate = Deflate {
        server_context_takeover: false,
        server_max_window_bits: 15,
        mem_level: 8,
        level: 6,
        client_context_takeover: false,
        client_max_window_bits: 15,
        threshold: 64,
    };
    /// Context takeover allowed on both sides, so the answers show only what the offer changed.
    const KEEP: Deflate = Deflate {
        server_context_takeover: true,
        client_context_takeover: true,
        ..NONE
    };
    const CLIENT_10: Deflate = Deflate {
        client_max_window_bits: 10,
        ..KEEP
    };
    const SERVER_12: Deflate = Deflate {
        server_max_window_bits: 12,
        ..KEEP
    };
    const SMALL: Deflate = Deflate {
        server_max_window_bits: 9,
        ..CLIENT_10
    };
    /// What browsers send.
    const BROWSER: &str = "permessage-deflate; client_max_window_bits";
    const PMD: &str = "permessage-deflate";
    const BOTH_NCT: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    /// Params as an answer states them: what the client will read from it.
    fn stated(answer: &str) -> Params {
        let list = parse_list(answer).expect("our answer is well-formed");
        let [extension] = list.as_slice() else {
            panic!("one extension in {answer:?}")
        };
        assert_eq!(extension.name, EXTENSION);
        let offer = Offer::read(&extension.params).expect("our answer reads as an offer");
        Params {
            server_no_context_takeover: offer.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover,
            server_max_window_bits: offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            client_max_window_bits: offer
                .client_max_window_bits
                .flatten()
                .unwrap_or(MAX_WINDOW_BITS),
        }
    }

    #[test]
    fn each_offer_gets_its_answer() {
        #[rustfmt::skip]
        let table: &[(&str, &[&str], Deflate, Option<&str>)] = &[
            ("plain offer", &[PMD], NONE, Some(BOTH_NCT)),
            ("plain offer, takeover allowed", &[PMD], KEEP, Some(PMD)),
            ("browser offer", &[BROWSER], NONE, Some(BOTH_NCT)),
            ("browser offer, takeover allowed", &[BROWSER], KEEP, Some(PMD)),
            ("offered server_no_context_takeover is echoed", &["permessage-deflate; server_no_context_takeover"],
                KEEP, Some("permessage-deflate; server_no_context_takeover")),
            ("offered client_no_context_takeover is echoed", &["permessage-deflate; client_no_context_takeover"],
                KEEP, Some("permessage-deflate; client_no_context_takeover")),
            ("unknown parameter declines the first offer", &["permessage-deflate; foo, permessage-deflate; server_max_window_bits=10"],
                KEEP, Some("permessage-deflate; server_max_window_bits=10")),
            ("duplicate declines the first offer", &["permessage-deflate; client_max_window_bits; client_max_window_bits=9, permessage-deflate"],
                KEEP, Some(PMD)),
            ("window 16 declines the first offer", &["permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=15"],
                KEEP, Some("permessage-deflate; server_max_window_bits=15")),
            ("server_no_context_takeover with a value", &["permessage-deflate; server_no_context_takeover=1, permessage-deflate"], KEEP, Some(PMD)),
            ("client_no_context_takeover with a value", &["permessage-deflate; client_no_context_takeover=\"\", permessage-deflate"], KEEP, Some(PMD)),
            ("server_max_window_bits without a value", &["permessage-deflate; server_max_window_bits, permessage-deflate; client_max_window_bits=12"],
                KEEP, Some("permessage-deflate; client_max_window_bits=12")),
            ("offers in two headers", &["permessage-deflate; foo", "permessage-deflate; server_max_window_bits=12"],
                KEEP, Some("permessage-deflate; server_max_window_bits=12")),
            ("quoted value", &["permessage-deflate; server_max_window_bits=\"10\""], KEEP, Some("permessage-deflate; server_max_window_bits=10")),
            ("quoted value with an escape", &["permessage-deflate; server_max_window_bits=\"1\\0\""], KEEP, Some("permessage-deflate; server_max_window_bits=10")),
            ("quoted value that is not a token", &["permessage-deflate; server_max_window_bits=\"1 0\", permessage-deflate"], KEEP, Some(PMD)),
            ("comma and semicolon inside quotes", &["permessage-deflate; client_max_window_bits=\"9,;\", permessage-deflate; client_max_window_bits=\"9\""],
                KEEP, Some("permessage-deflate; client_max_window_bits=9")),
            ("leading zero", &["permessage-deflate; server_max_window_bits=010, permessage-deflate"], KEEP, Some(PMD)),
            ("leading zero on 8", &["permessage-deflate; client_max_window_bits=08, permessage-deflate"], KEEP, Some(PMD)),
            ("decimal point", &["permessage-deflate; server_max_window_bits=8.0, permessage-deflate"], KEEP, Some(PMD)),
            ("plus sign", &["permessage-deflate; server_max_window_bits=+9, permessage-deflate"], KEEP, Some(PMD)),
            ("empty quoted value", &["permessage-deflate; client_max_window_bits=\"\", permessage-deflate"], KEEP, Some(PMD)),
            ("every offer declined", &["permessage-deflate; foo, permessage-deflate; server_max_window_bits=7"], KEEP, None),
            ("valueless client window limited by the settings", &[BROWSER], CLIENT_10, Some("permessage-deflate; client_max_window_bits=10")),
            ("client window never named without the parameter", &[PMD], CLIENT_10, Some(PMD)),
            ("client window is the smaller of offer and settings", &["permessage-deflate; client_max_window_bits=12"],
                CLIENT_10, Some("permessage-deflate; client_max_window_bits=10")),
            ("client window below the settings is kept", &["permessage-deflate; client_max_window_bits=9"],
                CLIENT_10, Some("permessage-deflate; client_max_window_bits=9")),
            ("offered client window 15 is answered", &["permessage-deflate; client_max_window_bits=15"],
                KEEP, Some("permessage-deflate; client_max_window_bits=15")),
            ("server window 8 is honoured", &["permessage-deflate; server_max_window_bits=8"], KEEP, Some("permessage-deflate; server_max_window_bits=8")),
            ("server settings limit an offer without a window", &[PMD], SERVER_12, Some("permessage-deflate; server_max_window_bits=12")),
            ("server settings limit a larger offered window", &["permessage-deflate; server_max_window_bits=14"],
                SERVER_12, Some("permessage-deflate; server_max_window_bits=12")),
            ("smaller offered server window is kept", &["permessage-deflate; server_max_window_bits=10"],
                SERVER_12, Some("permessage-deflate; server_max_window_bits=10")),
            ("everything at once", &["permessage-deflate; server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=9"],
                NONE, Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10")),
            ("other extension before it", &["x-webkit-deflate-frame, permessage-deflate"], KEEP, Some(PMD)),
            ("other extension in its own header", &["x-webkit-deflate-frame", PMD], KEEP, Some(PMD)),
            ("other extension with odd parameters", &["foo; server_max_window_bits=99; a=\"b c\", permessage-deflate"], KEEP, Some(PMD)),
            ("case-insensitive names", &["PerMessage-Deflate; Server_Max_Window_Bits=10; CLIENT_MAX_WINDOW_BITS"],
                KEEP, Some("permessage-deflate; server_max_window_bits=10")),
            ("whitespace and tabs", &[" \tpermessage-deflate \t; \tserver_max_window_bits \t= \t10 \t, "],
                KEEP, Some("permessage-deflate; server_max_window_bits=10")),
            ("empty elements", &[", ,permessage-deflate,, "], KEEP, Some(PMD)),
            ("empty elements around another extension", &["x, , permessage-deflate,"], KEEP, Some(PMD)),
            ("empty header values", &["", " ", PMD], KEEP, Some(PMD)),
            ("unterminated quote", &["permessage-deflate; server_max_window_bits=\"10"], KEEP, None),
            ("escape at the end", &["permessage-deflate; server_max_window_bits=\"10\\"], KEEP, None),
            ("empty parameter", &["permessage-deflate;;"], KEEP, None),
            ("value without a name", &["=10"], KEEP, None),
            ("parameter value without a name", &["permessage-deflate; =10"], KEEP, None),
            ("missing value", &["permessage-deflate; server_max_window_bits=, permessage-deflate"], KEEP, None),
            ("@ in an extension name", &["permess@ge-deflate, permessage-deflate"], KEEP, None),
            ("@ in a parameter name", &["permessage-deflate; x@y"], KEEP, None),
            ("lone semicolon", &[";"], KEEP, None),
            ("lone semicolon after an offer", &["permessage-deflate, ;"], KEEP, None),
            ("text after a quoted value", &["permessage-deflate; a=\"b\"c"], KEEP, None),
            ("two values", &["permessage-deflate; a=b=c"], KEEP, None),
            ("space inside a name", &["permessage deflate"], KEEP, None),
            ("control character in quotes", &["permessage-deflate; a=\"\x01\""], KEEP, None),
            ("malformed later header", &[PMD, "\"x"], KEEP, None),
            ("no permessage-deflate", &["x-webkit-deflate-frame; no_context_takeover"], KEEP, None),
            ("no header", &[], KEEP, None),
        ];
        for (rule, headers, settings, expected) in table {
            let got = negotiate(headers.iter().copied(), settings);
            let answer = got.as_ref().map(|(_, answer)| answer.as_str());
            assert_eq!(answer, *expected, "{rule}: {headers:?}");
            if let Some((params, answer)) = got {
                assert_eq!(
                    params,
                    stated(&answer),
                    "{rule}: the params say what the answer says"
                );
            }
        }
    }

    #[test]
    fn the_browser_offer_under_the_defaults_gets_no_takeover_and_full_windows() {
        let got = negotiate([BROWSER], &Deflate::default());
        let params = Params {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        assert_eq!(got, Some((params, BOTH_NCT.to_owned())));
    }

    #[test]
    fn only_window_values_8_to_15_are_accepted() {
        for bits in 7..=16u8 {
            let valid = (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits);
            for name in [SERVER_MAX_WINDOW_BITS, CLIENT_MAX_WINDOW_BITS] {
                let offer = format!("permessage-deflate; {name}={bits}");
                let answer = negotiate([offer.as_str()], &KEEP).map(|(_, answer)| answer);
                assert_eq!(answer, valid.then(|| offer.clone()), "{offer}");
                let zero = format!("permessage-deflate; {name}=0{bits}");
                assert_eq!(negotiate([zero.as_str()], &KEEP), None, "{zero}");
            }
        }
    }

    /// xorshift64 (Marsaglia 2003): enough randomness for fuzzing by hand, with no dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_headers_never_panic_and_every_answer_keeps_the_rules() {
        const CHARS: &[u8] = b" ,;=\"\\abcdefghijklmnopqrstuvwxyz0123456789_@\t";
        const NAMES: &[&str] = &[
            SERVER_NO_CONTEXT_TAKEOVER,
            CLIENT_NO_CONTEXT_TAKEOVER,
            SERVER_MAX_WINDOW_BITS,
            CLIENT_MAX_WINDOW_BITS,
        ];
        const VALUES: &[&str] = &["", "=8", "=10", "=15", "=16", "=08", "=\"9\"", "=\"1\\2\""];
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| xorshift(&mut state) as usize % n;
        let mut accepted = 0;
        for round in 0..5000 {
            // Offers shaped like real ones, then a few random characters written over or into them; every third
            // round, random characters alone.
            let (offers, typos) = if round % 3 == 0 {
                (0, next(24))
            } else {
                (1 + next(3), next(4))
            };
            let mut text = String::new();
            for _ in 0..offers {
                text.push_str(if next(4) == 0 { "x-other" } else { PMD });
                for _ in 0..next(4) {
                    text.push_str("; ");
                    text.push_str(NAMES[next(NAMES.len())]);
                    text.push_str(VALUES[next(VALUES.len())]);
                }
                text.push_str(", ");
            }
            let mut bytes = text.into_bytes();
            for _ in 0..typos {
                let (at, byte) = (next(bytes.len() + 1), CHARS[next(CHARS.len())]);
                match next(2) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.insert(at, byte),
                }
            }
            let text = String::from_utf8(bytes).expect("ASCII");
            let cut = next(text.len() + 1);
            let headers = [&text[..cut], &text[cut..]];
            let settings = [NONE, SMALL][round % 2];
            let Some((params, answer)) = negotiate(headers, &settings) else {
                continue;
            };
            accepted += 1;
            // The offer that was accepted: the first permessage-deflate offer that reads.
            let offer = headers
                .iter()
                .flat_map(|h| parse_list(h).expect("accepted, so it parsed"))
                .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION))
                .find_map(|e| Offer::read(&e.params))
                .expect("accepted, so an offer read");
            let within = |bits, offered: Option<u8>| {
                (MIN_WINDOW_BITS..=offered.unwrap_or(MAX_WINDOW_BITS)).contains(&bits)
            };
            let rules = [
                within(params.server_max_window_bits, offer.server_max_window_bits),
                within(
                    params.client_max_window_bits,
                    offer.client_max_window_bits.flatten(),
                ),
                // RFC 7692 §7.1.2.2: no client_max_window_bits in an answer to an offer without it.
                offer.client_max_window_bits.is_some() || !answer.contains(CLIENT_MAX_WINDOW_BITS),
                params.server_no_context_takeover || !offer.server_no_context_takeover,
                params.client_no_context_takeover || !offer.client_no_context_takeover,
                params == stated(&answer),
            ];
            assert_eq!(rules, [true; 6], "{headers:?} got {answer:?}");
        }
        assert!(
            accepted > 100,
            "only {accepted} answers: the generator should reach the accepting paths"
        );
    }
}
