//! Server-generated event ids, and recognising them when a client sends one back.
//!
//! An event appended without an `Event-Id` gets a UUIDv7: the current unix
//! milliseconds, 12 random bits, and 62 bits that are the event's global position
//! under a keyed permutation (a four-round Feistel network over SipHash-1-3, keyed by a
//! secret stored in the database's `instance` table). Such ids are stored but kept out
//! of the unique id index, which holds only ids that clients chose: inserting into
//! that index was a tenth of the writer's work per event for ids that nobody else can
//! produce. When a client sends an id back (a retry that sets `Event-Id` to the id the
//! first attempt returned), [`EventIds::position`] inverts the permutation and the
//! writer checks the event stored at that position, one primary-key read.
//!
//! The key keeps the ids unpredictable: without it, a client could pick, as its own
//! id, the id the server is about to give a later event of the same stream. Written
//! by hand (the Feistel rounds are a dozen lines) because no maintained crate offers a
//! keyed permutation of a 62-bit domain; SipHash itself comes from `siphasher`.

use std::hash::Hasher;

use super::db::{Db, vals};
use siphasher::sip::SipHasher13;
use uuid::Uuid;

use crate::error::{EngineError, Result};

/// The `instance` row that holds the key.
const KEY_NAME: &str = "event_id_key";
/// The permuted position fills the 62 bits after the variant.
const BITS: u32 = 62;
const HALF: u32 = BITS / 2;
const HALF_MASK: u64 = (1 << HALF) - 1;
const ROUNDS: u8 = 4;

/// Makes and recognises server-generated ids; owned by the writer.
pub(super) struct EventIds {
    k0: u64,
    k1: u64,
    /// SplitMix64 state for the 12 random bits: ids need those to differ, not to be
    /// secret, and asking the kernel per id would be a syscall per event.
    state: u64,
}

impl EventIds {
    /// Loads the database's key, creating it on first start.
    pub(super) fn load(db: &Db) -> Result<Self> {
        let stored = db.row(
            "SELECT value FROM instance WHERE name = ?1",
            vals![KEY_NAME],
            |r| r.blob(0),
        )?;
        let key: [u8; 16] = match stored {
            Some(v) => v.as_slice().try_into().map_err(|_| {
                EngineError::internal(format!(
                    "the stored {KEY_NAME} has {} bytes, not 16",
                    v.len()
                ))
            })?,
            None => {
                let mut key = [0u8; 16];
                getrandom::fill(&mut key).map_err(|e| {
                    EngineError::internal(format!("no randomness for the event id key: {e}"))
                })?;
                // another node starting on the same new database may make one first:
                // the first made is everyone's
                db.exec(
                    "INSERT INTO instance (name, value) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO NOTHING",
                    vals![KEY_NAME, key.as_slice()],
                )?;
                let stored = db.row(
                    "SELECT value FROM instance WHERE name = ?1",
                    vals![KEY_NAME],
                    |r| r.blob(0),
                )?;
                match stored.as_deref().map(<[u8; 16]>::try_from) {
                    Some(Ok(stored)) => stored,
                    _ => key,
                }
            }
        };
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed)
            .map_err(|e| EngineError::internal(format!("no randomness for event ids: {e}")))?;
        Ok(Self::with_key(key, u64::from_le_bytes(seed)))
    }

    fn with_key(key: [u8; 16], seed: u64) -> Self {
        let (k0, k1) = key.split_at(8);
        Self {
            k0: u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(k1.try_into().expect("8 bytes")),
            state: seed,
        }
    }

    /// The id of the event appended at global position `pos`, stamped `now_ms`.
    pub(super) fn generate(&mut self, pos: i64, now_ms: i64) -> Uuid {
        let permuted = self.permute(pos as u64 & ((1 << BITS) - 1));
        let mut bytes = [0u8; 10];
        bytes[..2].copy_from_slice(&(self.next_u64() as u16).to_be_bytes());
        // the builder overwrites the top two bits of byte 2 (the variant), which the
        // 62-bit value leaves clear
        bytes[2..].copy_from_slice(&permuted.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(now_ms.max(0) as u64, &bytes).into_uuid()
    }

    /// The position whose generated id `id` would be, if it has the shape of one; the
    /// caller checks the event there (any UUIDv7 maps to some position).
    pub(super) fn position(&self, id: &Uuid) -> Option<i64> {
        let b = id.as_bytes();
        if b[6] >> 4 != 7 || b[8] >> 6 != 0b10 {
            return None;
        }
        let low = u64::from_be_bytes(b[8..].try_into().expect("8 bytes")) & ((1 << BITS) - 1);
        i64::try_from(self.unpermute(low)).ok()
    }

    fn round(&self, i: u8, half: u64) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u64(half | (u64::from(i) << 56));
        h.finish() & HALF_MASK
    }

    fn permute(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> HALF, x & HALF_MASK);
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(i, r));
        }
        (l << HALF) | r
    }

    fn unpermute(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> HALF, x & HALF_MASK);
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(i, l), l);
        }
        (l << HALF) | r
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_give_back_their_position() {
        let mut ids = EventIds::with_key(*b"0123456789abcdef", 7);
        for pos in [0, 1, 2, 41, 1 << 31, (1 << 40) + 3, (1 << 62) - 1] {
            let id = ids.generate(pos, 1_700_000_000_000);
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(ids.position(&id), Some(pos), "{id} of {pos}");
        }
    }

    #[test]
    fn ids_differ_by_key_and_do_not_show_the_position() {
        let mut a = EventIds::with_key(*b"0123456789abcdef", 7);
        let mut b = EventIds::with_key(*b"fedcba9876543210", 7);
        let (x, y) = (a.generate(5, 1000), a.generate(6, 1000));
        assert_ne!(x, y);
        assert_ne!(x, b.generate(5, 1000));
        // neighbouring positions do not give neighbouring ids
        let low = |u: Uuid| u.as_u128() as u64 & ((1 << BITS) - 1);
        assert!(low(x).abs_diff(low(y)) > 1 << 20, "{x} {y}");
        // another database's id maps to some other position
        assert_ne!(b.position(&x), Some(5));
    }

    #[test]
    fn ids_of_other_shapes_have_no_position() {
        let ids = EventIds::with_key([1; 16], 1);
        assert_eq!(ids.position(&Uuid::new_v4()), None);
        assert_eq!(ids.position(&Uuid::nil()), None);
    }
}
