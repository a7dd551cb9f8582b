//! MQTT 3.1, 3.1.1 and 5.0 control packets: types, incremental decoding, encoding and validation.
//!
//! The codec is sans-I/O: [`decode`] takes bytes the caller has read into a [`bytes::BytesMut`]
//! and returns a complete [`Packet`], `Ok(None)` when more bytes are needed (nothing is consumed),
//! or a [`DecodeError`] that carries the reason code a broker sends back
//! ([`DecodeError::reason_code`]). Payloads, topics and other strings are slices of the read
//! buffer ([`bytes::Bytes`], [`bytestring::ByteString`]): decoding never copies them.
//!
//! [`Packet::encode`] writes into a buffer the caller owns and reuses.
//!
//! The broker and the client both use this crate: there is one codec, never two.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod packet;
mod properties;
mod reason;
mod topic;
mod version;
mod wire;

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;
pub use error::{DecodeError, EncodeError};
pub use packet::{
    decode, decode_frame, decode_within, Auth, ConnAck, Connect, DecodeLimits, Disconnect, FixedHeader,
    Packet, PacketType, PubAck, PubComp, PubRec, PubRel, Publish, PublishAck, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will, MAX_REMAINING_LENGTH, MAX_TOPIC_FILTERS,
};
pub use properties::{Properties, Property, PropertyContext, PropertyId, MAX_PROPERTIES};
pub use reason::{ConnectReturnCode, ReasonCode};
pub use topic::{
    is_valid_topic_filter, is_valid_topic_name, parse_shared, topic_matches, validate_topic_filter,
    validate_topic_name, SharedFilter, TopicError,
};
pub use version::{ProtocolVersion, QoS};
pub use wire::is_disallowed_char;
