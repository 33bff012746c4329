//! The vocabulary every stage shares: a Kafka record as the decoders see it,
//! a partition's name, the stage that refused a message, the rejections of a
//! chunk and the ranges of offsets the broker lost. The bottom of the layout:
//! it imports nothing from inlet but [`crate::fault`].

mod lost;
mod rejections;

pub use lost::{LostRange, Next};
pub use rejections::Rejections;

/// A partition of a topic: `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// Where in the pipeline a message was found unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The bytes are not a value of the format (bad JSON, tombstone).
    Decode,
    /// The value does not fit the table schema.
    Schema,
    /// A transform failed on the row.
    Transform,
    /// The row violates a table constraint.
    Constraint,
    /// Not a message: a range of offsets the broker deleted before inlet
    /// read them (`fail_on_data_loss = false`); see `source/loss.rs`.
    Lost,
}

impl Stage {
    /// Lower-case name, as logged and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Schema => "schema",
            Stage::Transform => "transform",
            Stage::Constraint => "constraint",
            Stage::Lost => "lost",
        }
    }
}

/// A message that cannot become a row: the poison pill's index in its chunk,
/// the stage and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Index of the message in the decoded chunk.
    pub index: usize,
    /// The stage that refused it.
    pub stage: Stage,
    /// Why, in words.
    pub reason: String,
}

impl Rejection {
    /// A rejection of message `index`.
    pub fn new(index: usize, stage: Stage, reason: impl Into<String>) -> Self {
        Rejection {
            index,
            stage,
            reason: reason.into(),
        }
    }
}

/// What the decoder needs to know of a Kafka message; implemented for
/// rdkafka's borrowed messages so that nothing is copied before decoding.
pub trait KafkaRecord {
    /// Topic name.
    fn topic(&self) -> &str;
    /// An identity of the topic that is cheaper to compare than its name
    /// (librdkafka's topic handle), or `None` where there is none. Two
    /// records with the same `Some` handle have the same topic.
    fn topic_handle(&self) -> Option<usize> {
        None
    }
    /// Partition.
    fn partition(&self) -> i32;
    /// Offset.
    fn offset(&self) -> i64;
    /// Timestamp in milliseconds since the epoch, if the broker gave one.
    fn timestamp_ms(&self) -> Option<i64>;
    /// Key bytes.
    fn key(&self) -> Option<&[u8]>;
    /// Value bytes; `None` for a tombstone.
    fn value(&self) -> Option<&[u8]>;
    /// Calls `f` for each header, in order.
    fn for_each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>));
}
