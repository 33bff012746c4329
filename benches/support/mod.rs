//! What the benches share: the event they feed inlet.

/// Writes the benches' JSON event `id` (about 190 bytes) into `out`.
pub fn payload(id: u64, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        r#"{{"id":{id},"user":"user-{:05}","action":"{}","amount":{}.{:02},"event_time":"2024-05-01T12:{:02}:{:02}.{:03}Z","country":"{}","session":"s-{:08x}","page":"/catalog/item/{:06}?ref=campaign"}}"#,
        id % 50_000,
        ["view", "click", "purchase", "refund"][(id % 4) as usize],
        id % 500,
        id % 100,
        id / 60 % 60,
        id % 60,
        id % 1000,
        ["DE", "FR", "US", "JP", "BR"][(id % 5) as usize],
        id.wrapping_mul(2_654_435_761) & 0xffff_ffff,
        id % 100_000,
    );
}
