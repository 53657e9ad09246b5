//! One Kafka record as the worker holds it, and what decoding may say of it. A leaf: the
//! source makes records, the batch buffers hold them, decode turns them into rows and the
//! dead-letter table keeps the ones that did not become rows.

use std::sync::Arc;

use rdkafka::message::{Headers, Message};

/// One Kafka record, owned.
#[derive(Clone, Debug)]
pub struct Record {
    /// Shared by every record of the topic: one allocation per topic, not per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// 0 = create time, 1 = log append time (Spark's timestampType); -1 when absent.
    pub timestamp_type: i32,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// Copies a message out of librdkafka's buffer; `topic` is the message's topic name,
    /// shared.
    pub fn from_message<M: Message>(message: &M, topic: Arc<str>) -> Record {
        use rdkafka::message::Timestamp;
        let (timestamp_ms, timestamp_type) = match message.timestamp() {
            Timestamp::NotAvailable => (None, -1),
            Timestamp::CreateTime(ms) => (Some(ms), 0),
            Timestamp::LogAppendTime(ms) => (Some(ms), 1),
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms,
            timestamp_type,
            key: message.key().map(<[u8]>::to_vec),
            headers,
            value: message.payload().map(<[u8]>::to_vec),
        }
    }
}

/// A record that did not become a row (deadLetter / fail), with why.
#[derive(Clone, Debug)]
pub struct BadRecord {
    /// Its position in the batch's records.
    pub index: usize,
    pub reason: String,
}

/// The value as text for `_rescued_data`: UTF-8 as is; other bytes escaped as `\xNN` so that
/// nothing of the input is lost.
pub fn raw_text(value: Option<&[u8]>) -> String {
    let Some(mut bytes) = value else {
        return String::new();
    };
    let mut text = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                text.push_str(valid);
                return text;
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let invalid = error.error_len().unwrap_or(rest.len());
                for byte in &rest[..invalid] {
                    text.push_str(&format!("\\x{byte:02X}"));
                }
                bytes = &rest[invalid..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_escapes_only_invalid_bytes() {
        assert_eq!(raw_text(Some(b"ok \xff\xfe \xc3\xa9")), "ok \\xFF\\xFE é");
        assert_eq!(raw_text(None), "");
    }
}
