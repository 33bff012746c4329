//! The panic boundary around every decoder of foreign bytes, and the one
//! routine that finds the messages a decoder refused a whole chunk for.
//!
//! arrow-json and arrow-avro decode strangers' bytes. Most bad messages are
//! refused one by one, but some checks reject the whole chunk (arrow-avro
//! validates UTF-8 only when it builds the string arrays), and a decoder may
//! panic. Either way the chunk is bisected: each half is decoded on its own
//! (after the decoder is rebuilt, since it may hold half a record), halves
//! that decode are kept, and halves that fail are split again until each
//! failing message stands alone and is rejected at the decode stage with the
//! decoder's error. Errors that are no message's fault (the registry, a
//! shutdown, a bug) are never bisected: they stop decoding as before.
//!
//! The good chunk pays for one `catch_unwind`, which costs nothing unless a
//! panic unwinds. A chunk with `k` culprits among `n` messages is decoded
//! about `k · log2(n)` more times in parts, at most `log2(n)` times in all.

use std::any::Any;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::record::{Rejection, Stage};

/// How decoding a range of a chunk failed.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// The decoder refused the range's bytes as a whole, for this reason
    /// (or panicked): some message in it is at fault.
    Refused(String),
    /// Not a message's fault: stop, never quarantine.
    Stop(E),
}

/// What decoding a contiguous range of a chunk produced, with message
/// indices counted from the range's start.
pub(crate) trait Piece: Default {
    /// Appends `other`, decoded from the messages from `offset` on: its
    /// indices are shifted by `offset`. Pieces are appended in message order.
    fn append(&mut self, other: Self, offset: usize);
    /// Message `index` (of this piece) is refused for `reason`.
    fn reject(&mut self, index: usize, reason: String);
}

/// A decoder that can decode any contiguous range of the chunk it holds.
pub(crate) trait RangeDecoder {
    /// What a range decodes to.
    type Piece: Piece;
    /// An error that is no message's fault.
    type Stop;
    /// Decodes messages `range` of the chunk, indices from `range.start`.
    fn decode_range(&mut self, range: Range<usize>) -> Result<Self::Piece, Failure<Self::Stop>>;
    /// Rebuilds the decoder's state after a refusal or a panic: it may
    /// hold half a record, which would corrupt what is decoded next.
    fn reset(&mut self) -> Result<(), Self::Stop>;
}

/// Runs `f`, turning a panic into a refusal.
pub(crate) fn attempt<T, E>(f: impl FnOnce() -> Result<T, Failure<E>>) -> Result<T, Failure<E>> {
    // The decoder's state after a panic is never used again before `reset`.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(Failure::Refused(format!(
            "decoder panicked: {}",
            panic_message(payload.as_ref())
        )))
    })
}

/// Messages `range` of `d`'s chunk were refused for `reason` as a whole:
/// resets `d`, then decodes the halves apart, recursively, appending what
/// decodes to `out` and rejecting each message that fails alone. `out`
/// counts indices from the chunk's start (0), and receives pieces in message
/// order.
pub(crate) fn isolate<D: RangeDecoder>(
    d: &mut D,
    range: Range<usize>,
    reason: String,
    out: &mut D::Piece,
) -> Result<(), D::Stop> {
    d.reset()?;
    if range.len() <= 1 {
        if range.len() == 1 {
            out.reject(range.start, reason);
        }
        return Ok(());
    }
    let mid = range.start + range.len() / 2;
    for half in [range.start..mid, mid..range.end] {
        match attempt(|| d.decode_range(half.clone())) {
            Ok(piece) => out.append(piece, half.start),
            Err(Failure::Stop(e)) => return Err(e),
            Err(Failure::Refused(reason)) => isolate(d, half, reason, out)?,
        }
    }
    Ok(())
}

/// Decodes the whole chunk of `len` messages behind the boundary: the
/// result of one attempt when it succeeds, else what [`isolate`] keeps.
#[cfg(test)]
pub(crate) fn decode_guarded<D: RangeDecoder>(d: &mut D, len: usize) -> Result<D::Piece, D::Stop> {
    match attempt(|| d.decode_range(0..len)) {
        Ok(piece) => Ok(piece),
        Err(Failure::Stop(e)) => Err(e),
        Err(Failure::Refused(reason)) => {
            let mut out = D::Piece::default();
            isolate(d, 0..len, reason, &mut out)?;
            Ok(out)
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// A rejection at the decode stage.
pub(crate) fn decode_rejection(index: usize, reason: String) -> Rejection {
    Rejection::new(index, Stage::Decode, reason)
}

/// Debug builds only (the tests use them): a value ending in this marker
/// makes the decoder reading it panic, so that tests can prove the panic
/// boundary, end to end too. Release builds have no such check.
#[cfg(debug_assertions)]
#[doc(hidden)]
pub const TEST_PANIC_MARKER: &[u8] = b"\xfe\xffinlet-test-panic";

/// Panics on a value ending in [`TEST_PANIC_MARKER`], in debug builds only.
#[inline(always)]
pub(crate) fn test_panic(value: &[u8]) {
    #[cfg(debug_assertions)]
    if value.ends_with(TEST_PANIC_MARKER) {
        panic!("test panic marker (debug builds only)");
    }
    #[cfg(not(debug_assertions))]
    let _ = value;
}

/// Keeps the panics tests cause on purpose (`boom…`, the test marker) out
/// of the output; any other panic is printed as usual.
#[cfg(test)]
pub(crate) fn quiet_test_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = panic_message(info.payload());
            if !(msg.starts_with("boom") || msg.starts_with("test panic marker")) {
                default(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Rejections;

    /// Rows are the indices of good messages; rejections as they are.
    #[derive(Default, Debug)]
    struct Rows {
        rows: Vec<usize>,
        rejected: Rejections,
    }

    impl Piece for Rows {
        fn append(&mut self, mut other: Self, offset: usize) {
            self.rows.extend(other.rows.iter().map(|r| r + offset));
            self.rejected.merge_shifted(&mut other.rejected, offset);
        }
        fn reject(&mut self, index: usize, reason: String) {
            self.rejected.push(decode_rejection(index, reason));
        }
    }

    /// A decoder of messages as bytes: 'b' is refused with the whole chunk,
    /// 'p' panics, 't' is refused alone (a tombstone-like rejection), 's' is
    /// the registry being down, anything else is a row. It counts resets
    /// and checks it was reset after every failure.
    struct Toy {
        chunk: Vec<u8>,
        dirty: bool,
        resets: usize,
        calls: usize,
    }

    impl RangeDecoder for Toy {
        type Piece = Rows;
        type Stop = String;
        fn decode_range(&mut self, range: Range<usize>) -> Result<Rows, Failure<String>> {
            assert!(!self.dirty, "decoded without a reset after a failure");
            self.calls += 1;
            let mut out = Rows::default();
            for (i, &m) in self.chunk[range].iter().enumerate() {
                match m {
                    b'b' => {
                        self.dirty = true;
                        return Err(Failure::Refused(format!("bad at {i}")));
                    }
                    b'p' => {
                        self.dirty = true;
                        panic!("boom {i}");
                    }
                    b's' => return Err(Failure::Stop("registry down".into())),
                    b't' => out.rejected.push(decode_rejection(i, "tombstone".into())),
                    _ => out.rows.push(i),
                }
            }
            Ok(out)
        }
        fn reset(&mut self) -> Result<(), String> {
            self.dirty = false;
            self.resets += 1;
            Ok(())
        }
    }

    fn run(chunk: &str) -> (Result<Rows, String>, Toy) {
        let mut toy = Toy {
            chunk: chunk.as_bytes().to_vec(),
            dirty: false,
            resets: 0,
            calls: 0,
        };
        let len = toy.chunk.len();
        quiet_test_panics();
        let r = decode_guarded(&mut toy, len);
        (r, toy)
    }

    #[test]
    fn a_good_chunk_is_decoded_once_and_never_reset() {
        let (r, toy) = run("gggtg");
        let r = r.unwrap();
        assert_eq!(r.rows, [0, 1, 2, 4]);
        assert_eq!(r.rejected.len(), 1);
        assert_eq!((toy.calls, toy.resets), (1, 0));
    }

    #[test]
    fn culprits_are_isolated_with_chunk_indices_and_the_rest_is_kept() {
        //          0123456789012345
        let chunk = "ggbgtgggpggtgggb";
        let (r, _) = run(chunk);
        let r = r.unwrap();
        let bad: Vec<(usize, &str)> = r
            .rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        let mut sorted = bad.clone();
        sorted.sort();
        assert_eq!(bad, sorted, "in message order");
        assert_eq!(
            bad.iter().map(|b| b.0).collect::<Vec<_>>(),
            [2, 4, 8, 11, 15]
        );
        // A culprit's reason is its own decoder error, as decoded alone.
        assert_eq!(bad[0].1, "bad at 0");
        assert_eq!(bad[1].1, "tombstone");
        assert_eq!(bad[2].1, "decoder panicked: boom 0");
        assert_eq!(bad[4].1, "bad at 0");
        let expected: Vec<usize> = chunk
            .bytes()
            .enumerate()
            .filter(|(_, c)| *c == b'g')
            .map(|(i, _)| i)
            .collect();
        assert_eq!(r.rows, expected);
        assert!(r.rejected.iter().all(|r| r.stage == Stage::Decode));
    }

    #[test]
    fn every_index_once_for_every_chunk_shape() {
        // All chunks of up to 7 messages over {g, b, p, t}: rows and
        // rejections partition the indices, in order.
        for len in 0..=7u32 {
            for code in 0..4u32.pow(len) {
                let chunk: String = (0..len)
                    .map(|k| ['g', 'b', 'p', 't'][(code / 4u32.pow(k) % 4) as usize])
                    .collect();
                let (r, toy) = run(&chunk);
                let r = r.unwrap();
                let mut all: Vec<usize> = r.rows.clone();
                all.extend(r.rejected.iter().map(|r| r.index));
                all.sort();
                assert_eq!(all, (0..len as usize).collect::<Vec<_>>(), "{chunk}");
                assert!(r.rows.windows(2).all(|w| w[0] < w[1]), "{chunk}");
                let failing = chunk.bytes().filter(|&c| c == b'b' || c == b'p').count();
                // Bounded work: each culprit costs about 2·log2(n) decodes.
                assert!(toy.calls <= 1 + failing * 2 * 4, "{chunk}: {}", toy.calls);
            }
        }
    }

    #[test]
    fn an_error_that_is_no_messages_fault_stops_and_is_never_quarantined() {
        for chunk in ["gsg", "gbgs", "spg", "gggpgggs"] {
            let (r, _) = run(chunk);
            assert_eq!(r.unwrap_err(), "registry down", "{chunk}");
        }
    }

    #[test]
    fn panic_payloads_are_named() {
        let r: Result<(), Failure<()>> = attempt(|| panic!("{} {}", "formatted", 1));
        assert!(matches!(r, Err(Failure::Refused(m)) if m == "decoder panicked: formatted 1"));
        let r: Result<(), Failure<()>> = attempt(|| std::panic::panic_any(7u8));
        assert!(matches!(r, Err(Failure::Refused(m)) if m == "decoder panicked: (no message)"));
    }
}
