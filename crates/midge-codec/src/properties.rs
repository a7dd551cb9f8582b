//! MQTT 5.0 properties (section 2.2.2): every property with its wire type, where each may
//! appear, and which may repeat.
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::wire::{binary_len, put_binary, put_varint, varint_len, Reader};
use crate::{DecodeError, EncodeError};

/// Where a property block appears: each packet with properties, and the will of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    /// CONNECT (section 3.1.2.11).
    Connect,
    /// The will properties of CONNECT (section 3.1.3.2).
    Will,
    /// CONNACK (section 3.2.2.3).
    ConnAck,
    /// PUBLISH (section 3.3.2.3).
    Publish,
    /// PUBACK.
    PubAck,
    /// PUBREC.
    PubRec,
    /// PUBREL.
    PubRel,
    /// PUBCOMP.
    PubComp,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl fmt::Display for PropertyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PropertyContext::*;
        f.write_str(match self {
            Connect => "CONNECT",
            Will => "will properties",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        })
    }
}

/// Property identifiers (MQTT 5.0 table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// Every property identifier.
    pub const ALL: [PropertyId; 27] = {
        use PropertyId::*;
        [
            PayloadFormatIndicator,
            MessageExpiryInterval,
            ContentType,
            ResponseTopic,
            CorrelationData,
            SubscriptionIdentifier,
            SessionExpiryInterval,
            AssignedClientIdentifier,
            ServerKeepAlive,
            AuthenticationMethod,
            AuthenticationData,
            RequestProblemInformation,
            WillDelayInterval,
            RequestResponseInformation,
            ResponseInformation,
            ServerReference,
            ReasonString,
            ReceiveMaximum,
            TopicAliasMaximum,
            TopicAlias,
            MaximumQoS,
            RetainAvailable,
            UserProperty,
            MaximumPacketSize,
            WildcardSubscriptionAvailable,
            SubscriptionIdentifierAvailable,
            SharedSubscriptionAvailable,
        ]
    };

    /// The identifier for a byte, if 5.0 defines one.
    pub fn from_u8(v: u8) -> Option<PropertyId> {
        Self::ALL.into_iter().find(|id| *id as u8 == v)
    }

    /// Whether this property may appear in `ctx` (MQTT 5.0 table 2-4).
    pub fn allowed_in(self, ctx: PropertyContext) -> bool {
        use PropertyContext as C;
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => matches!(ctx, C::Publish | C::Will),
            SubscriptionIdentifier => matches!(ctx, C::Publish | C::Subscribe),
            SessionExpiryInterval => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => ctx == C::ConnAck,
            AuthenticationMethod | AuthenticationData => {
                matches!(ctx, C::Connect | C::ConnAck | C::Auth)
            }
            RequestProblemInformation | RequestResponseInformation => ctx == C::Connect,
            WillDelayInterval => ctx == C::Will,
            ServerReference => matches!(ctx, C::ConnAck | C::Disconnect),
            ReasonString => !matches!(ctx, C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(ctx, C::Connect | C::ConnAck)
            }
            TopicAlias => ctx == C::Publish,
            UserProperty => true,
        }
    }

    /// Whether the property may appear more than once in `ctx`: User Property anywhere, and
    /// Subscription Identifier in a PUBLISH sent to a client [MQTT-3.3.4-3].
    pub fn repeatable_in(self, ctx: PropertyContext) -> bool {
        match self {
            PropertyId::UserProperty => true,
            PropertyId::SubscriptionIdentifier => ctx == PropertyContext::Publish,
            _ => false,
        }
    }
}

/// One MQTT 5.0 property with its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(ByteString),
    ResponseTopic(ByteString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteString),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteString),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(ByteString),
    ServerReference(ByteString),
    ReasonString(ByteString),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    /// A name and a value; may repeat, order kept.
    UserProperty(ByteString, ByteString),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

impl Property {
    /// The identifier of this property.
    pub fn id(&self) -> PropertyId {
        use Property as P;
        use PropertyId as I;
        match self {
            P::PayloadFormatIndicator(_) => I::PayloadFormatIndicator,
            P::MessageExpiryInterval(_) => I::MessageExpiryInterval,
            P::ContentType(_) => I::ContentType,
            P::ResponseTopic(_) => I::ResponseTopic,
            P::CorrelationData(_) => I::CorrelationData,
            P::SubscriptionIdentifier(_) => I::SubscriptionIdentifier,
            P::SessionExpiryInterval(_) => I::SessionExpiryInterval,
            P::AssignedClientIdentifier(_) => I::AssignedClientIdentifier,
            P::ServerKeepAlive(_) => I::ServerKeepAlive,
            P::AuthenticationMethod(_) => I::AuthenticationMethod,
            P::AuthenticationData(_) => I::AuthenticationData,
            P::RequestProblemInformation(_) => I::RequestProblemInformation,
            P::WillDelayInterval(_) => I::WillDelayInterval,
            P::RequestResponseInformation(_) => I::RequestResponseInformation,
            P::ResponseInformation(_) => I::ResponseInformation,
            P::ServerReference(_) => I::ServerReference,
            P::ReasonString(_) => I::ReasonString,
            P::ReceiveMaximum(_) => I::ReceiveMaximum,
            P::TopicAliasMaximum(_) => I::TopicAliasMaximum,
            P::TopicAlias(_) => I::TopicAlias,
            P::MaximumQoS(_) => I::MaximumQoS,
            P::RetainAvailable(_) => I::RetainAvailable,
            P::UserProperty(..) => I::UserProperty,
            P::MaximumPacketSize(_) => I::MaximumPacketSize,
            P::WildcardSubscriptionAvailable(_) => I::WildcardSubscriptionAvailable,
            P::SubscriptionIdentifierAvailable(_) => I::SubscriptionIdentifierAvailable,
            P::SharedSubscriptionAvailable(_) => I::SharedSubscriptionAvailable,
        }
    }

    /// Bytes on the wire: identifier and value.
    fn encoded_len(&self) -> usize {
        use Property as P;
        1 + match self {
            P::PayloadFormatIndicator(_)
            | P::RequestProblemInformation(_)
            | P::RequestResponseInformation(_)
            | P::MaximumQoS(_)
            | P::RetainAvailable(_)
            | P::WildcardSubscriptionAvailable(_)
            | P::SubscriptionIdentifierAvailable(_)
            | P::SharedSubscriptionAvailable(_) => 1,
            P::ServerKeepAlive(_) | P::ReceiveMaximum(_) | P::TopicAliasMaximum(_) | P::TopicAlias(_) => 2,
            P::MessageExpiryInterval(_)
            | P::SessionExpiryInterval(_)
            | P::WillDelayInterval(_)
            | P::MaximumPacketSize(_) => 4,
            P::SubscriptionIdentifier(v) => varint_len(*v as usize),
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => binary_len(s.as_bytes()),
            P::CorrelationData(b) | P::AuthenticationData(b) => binary_len(b),
            P::UserProperty(k, v) => binary_len(k.as_bytes()) + binary_len(v.as_bytes()),
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        use Property as P;
        out.put_u8(self.id() as u8);
        match self {
            P::PayloadFormatIndicator(v)
            | P::RequestProblemInformation(v)
            | P::RequestResponseInformation(v)
            | P::MaximumQoS(v)
            | P::RetainAvailable(v)
            | P::WildcardSubscriptionAvailable(v)
            | P::SubscriptionIdentifierAvailable(v)
            | P::SharedSubscriptionAvailable(v) => out.put_u8(*v),
            P::ServerKeepAlive(v) | P::ReceiveMaximum(v) | P::TopicAliasMaximum(v) | P::TopicAlias(v) => {
                out.put_u16(*v)
            }
            P::MessageExpiryInterval(v)
            | P::SessionExpiryInterval(v)
            | P::WillDelayInterval(v)
            | P::MaximumPacketSize(v) => out.put_u32(*v),
            P::SubscriptionIdentifier(v) => put_varint(out, *v as usize)?,
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => put_binary(out, s.as_bytes(), "property string")?,
            P::CorrelationData(b) | P::AuthenticationData(b) => put_binary(out, b, "property data")?,
            P::UserProperty(k, v) => {
                put_binary(out, k.as_bytes(), "user property name")?;
                put_binary(out, v.as_bytes(), "user property value")?;
            }
        }
        Ok(())
    }

    fn decode(id: PropertyId, r: &mut Reader) -> Result<Property, DecodeError> {
        use Property as P;
        use PropertyId as I;
        const F: &str = "property value";
        let p = match id {
            I::PayloadFormatIndicator => P::PayloadFormatIndicator(r.u8(F)?),
            I::MessageExpiryInterval => P::MessageExpiryInterval(r.u32(F)?),
            I::ContentType => P::ContentType(r.string("Content Type")?),
            I::ResponseTopic => P::ResponseTopic(r.string("Response Topic")?),
            I::CorrelationData => P::CorrelationData(r.binary(F)?),
            I::SubscriptionIdentifier => P::SubscriptionIdentifier(r.varint("Subscription Identifier")?),
            I::SessionExpiryInterval => P::SessionExpiryInterval(r.u32(F)?),
            I::AssignedClientIdentifier => {
                P::AssignedClientIdentifier(r.string("Assigned Client Identifier")?)
            }
            I::ServerKeepAlive => P::ServerKeepAlive(r.u16(F)?),
            I::AuthenticationMethod => P::AuthenticationMethod(r.string("Authentication Method")?),
            I::AuthenticationData => P::AuthenticationData(r.binary(F)?),
            I::RequestProblemInformation => P::RequestProblemInformation(r.u8(F)?),
            I::WillDelayInterval => P::WillDelayInterval(r.u32(F)?),
            I::RequestResponseInformation => P::RequestResponseInformation(r.u8(F)?),
            I::ResponseInformation => P::ResponseInformation(r.string("Response Information")?),
            I::ServerReference => P::ServerReference(r.string("Server Reference")?),
            I::ReasonString => P::ReasonString(r.string("Reason String")?),
            I::ReceiveMaximum => P::ReceiveMaximum(r.u16(F)?),
            I::TopicAliasMaximum => P::TopicAliasMaximum(r.u16(F)?),
            I::TopicAlias => P::TopicAlias(r.u16(F)?),
            I::MaximumQoS => P::MaximumQoS(r.u8(F)?),
            I::RetainAvailable => P::RetainAvailable(r.u8(F)?),
            I::UserProperty => {
                P::UserProperty(r.string("User Property name")?, r.string("User Property value")?)
            }
            I::MaximumPacketSize => P::MaximumPacketSize(r.u32(F)?),
            I::WildcardSubscriptionAvailable => P::WildcardSubscriptionAvailable(r.u8(F)?),
            I::SubscriptionIdentifierAvailable => P::SubscriptionIdentifierAvailable(r.u8(F)?),
            I::SharedSubscriptionAvailable => P::SharedSubscriptionAvailable(r.u8(F)?),
        };
        p.check_value()?;
        if let P::ResponseTopic(topic) = &p {
            // A topic name: "The Response Topic MUST NOT contain wildcard characters"
            // [MQTT-3.3.2-14] (and in a will, 3.1.3.2.5).
            if topic.contains(['+', '#']) {
                return Err(DecodeError::WildcardInResponseTopic);
            }
        }
        Ok(p)
    }

    /// Rejects values outside the range the specification gives each property.
    fn check_value(&self) -> Result<(), DecodeError> {
        use Property as P;
        let bad = match *self {
            // Flags defined as 0 or 1: anything else is a Protocol Error (sections 3.1.2.11.6,
            // 3.1.2.11.7, 3.2.2.3.4, 3.2.2.3.5, 3.2.2.3.11 to 3.2.2.3.13, 3.3.2.3.2).
            P::PayloadFormatIndicator(v)
            | P::RequestProblemInformation(v)
            | P::RequestResponseInformation(v)
            | P::MaximumQoS(v)
            | P::RetainAvailable(v)
            | P::WildcardSubscriptionAvailable(v)
            | P::SubscriptionIdentifierAvailable(v)
            | P::SharedSubscriptionAvailable(v) => (v > 1).then_some(u32::from(v)),
            // Receive Maximum 0, Maximum Packet Size 0, Topic Alias 0 and Subscription Identifier
            // 0 are Protocol Errors (3.1.2.11.3, 3.1.2.11.4, [MQTT-3.3.2-8], 3.8.2.1.2).
            P::ReceiveMaximum(0) | P::TopicAlias(0) => Some(0),
            P::MaximumPacketSize(0) | P::SubscriptionIdentifier(0) => Some(0),
            _ => None,
        };
        match bad {
            Some(value) => Err(DecodeError::InvalidPropertyValue { property: self.id(), value }),
            None => Ok(()),
        }
    }
}

/// The most properties a server takes in one property block ([`crate::DecodeLimits::server`]):
/// 1,024, far beyond any real use (hosted brokers allow some 20 user properties), and a
/// bound on what a message takes once decoded, beside its bytes: a property of 5 bytes on
/// the wire (an empty user property) takes some 140 in memory, so 1,024 of them take
/// 143 KB. A packet of 256 MB of them took several gigabytes; with 65,535 allowed, a queue
/// of 1,000 such messages took 4.6 GB.
pub const MAX_PROPERTIES: usize = 1_024;

/// The properties of one packet or will, in the order received: order matters for user
/// properties, which are forwarded as they came [MQTT-3.3.2-18].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Properties(Vec<Property>);

macro_rules! copy_getters {
    ($( $(#[$doc:meta])* $name:ident: $variant:ident -> $ty:ty; )*) => {
        $( $(#[$doc])* pub fn $name(&self) -> Option<$ty> {
            self.0.iter().find_map(|p| match p { Property::$variant(v) => Some(*v), _ => None })
        } )*
    };
}
macro_rules! ref_getters {
    ($( $(#[$doc:meta])* $name:ident: $variant:ident -> $ty:ty; )*) => {
        $( $(#[$doc])* pub fn $name(&self) -> Option<&$ty> {
            self.0.iter().find_map(|p| match p { Property::$variant(v) => Some(v), _ => None })
        } )*
    };
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties(Vec::new())
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The same properties, each string and binary value in an allocation of its own:
    /// decoded values are slices of the packet's buffer, and keep all of it alive as long
    /// as they live.
    pub fn detached(&self) -> Properties {
        use Property as P;
        let s = |v: &ByteString| ByteString::from(&**v);
        let b = |v: &Bytes| Bytes::copy_from_slice(v);
        Properties(
            self.0
                .iter()
                .map(|p| match p {
                    P::ContentType(v) => P::ContentType(s(v)),
                    P::ResponseTopic(v) => P::ResponseTopic(s(v)),
                    P::CorrelationData(v) => P::CorrelationData(b(v)),
                    P::AssignedClientIdentifier(v) => P::AssignedClientIdentifier(s(v)),
                    P::AuthenticationMethod(v) => P::AuthenticationMethod(s(v)),
                    P::AuthenticationData(v) => P::AuthenticationData(b(v)),
                    P::ResponseInformation(v) => P::ResponseInformation(s(v)),
                    P::ServerReference(v) => P::ServerReference(s(v)),
                    P::ReasonString(v) => P::ReasonString(s(v)),
                    P::UserProperty(k, v) => P::UserProperty(s(k), s(v)),
                    other => other.clone(),
                })
                .collect(),
        )
    }

    /// The properties in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Property> {
        self.0.iter()
    }

    /// Appends a property (repeats are the caller's business; [`Properties::set`] replaces).
    pub fn push(&mut self, p: Property) {
        self.0.push(p);
    }

    /// Sets a property, replacing any with the same identifier.
    pub fn set(&mut self, p: Property) {
        let id = p.id();
        match self.0.iter().position(|q| q.id() == id) {
            Some(i) => {
                self.0[i] = p;
                self.0.retain({
                    let mut seen = false;
                    move |q| {
                        if q.id() != id {
                            return true;
                        }
                        let keep = !seen;
                        seen = true;
                        keep
                    }
                });
            }
            None => self.0.push(p),
        }
    }

    /// Removes every property with this identifier.
    pub fn remove(&mut self, id: PropertyId) {
        self.0.retain(|p| p.id() != id);
    }

    /// Keeps the properties for which `f` is true.
    pub fn retain(&mut self, f: impl FnMut(&Property) -> bool) {
        self.0.retain(f);
    }

    /// The first property with this identifier.
    pub fn get(&self, id: PropertyId) -> Option<&Property> {
        self.0.iter().find(|p| p.id() == id)
    }

    copy_getters! {
        /// Payload Format Indicator (0x01).
        payload_format_indicator: PayloadFormatIndicator -> u8;
        /// Message Expiry Interval in seconds (0x02).
        message_expiry_interval: MessageExpiryInterval -> u32;
        /// Session Expiry Interval in seconds (0x11).
        session_expiry_interval: SessionExpiryInterval -> u32;
        /// Server Keep Alive in seconds (0x13).
        server_keep_alive: ServerKeepAlive -> u16;
        /// Request Problem Information (0x17).
        request_problem_information: RequestProblemInformation -> u8;
        /// Will Delay Interval in seconds (0x18).
        will_delay_interval: WillDelayInterval -> u32;
        /// Request Response Information (0x19).
        request_response_information: RequestResponseInformation -> u8;
        /// Receive Maximum (0x21).
        receive_maximum: ReceiveMaximum -> u16;
        /// Topic Alias Maximum (0x22).
        topic_alias_maximum: TopicAliasMaximum -> u16;
        /// Topic Alias (0x23).
        topic_alias: TopicAlias -> u16;
        /// Maximum QoS (0x24).
        maximum_qos: MaximumQoS -> u8;
        /// Retain Available (0x25).
        retain_available: RetainAvailable -> u8;
        /// Maximum Packet Size (0x27).
        maximum_packet_size: MaximumPacketSize -> u32;
        /// Wildcard Subscription Available (0x28).
        wildcard_subscription_available: WildcardSubscriptionAvailable -> u8;
        /// Subscription Identifier Available (0x29).
        subscription_identifier_available: SubscriptionIdentifierAvailable -> u8;
        /// Shared Subscription Available (0x2A).
        shared_subscription_available: SharedSubscriptionAvailable -> u8;
    }

    ref_getters! {
        /// Content Type (0x03).
        content_type: ContentType -> ByteString;
        /// Response Topic (0x08).
        response_topic: ResponseTopic -> ByteString;
        /// Correlation Data (0x09).
        correlation_data: CorrelationData -> Bytes;
        /// Assigned Client Identifier (0x12).
        assigned_client_identifier: AssignedClientIdentifier -> ByteString;
        /// Authentication Method (0x15).
        authentication_method: AuthenticationMethod -> ByteString;
        /// Authentication Data (0x16).
        authentication_data: AuthenticationData -> Bytes;
        /// Response Information (0x1A).
        response_information: ResponseInformation -> ByteString;
        /// Server Reference (0x1C).
        server_reference: ServerReference -> ByteString;
        /// Reason String (0x1F).
        reason_string: ReasonString -> ByteString;
    }

    /// Every Subscription Identifier, in order.
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(*v),
            _ => None,
        })
    }

    /// Every User Property, in order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&ByteString, &ByteString)> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }

    /// Reads a property block: its length, then each property, checking that each may appear
    /// in `ctx` and appears no more often than allowed.
    pub(crate) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let len = r.varint("property length")? as usize;
        if len == 0 {
            return Ok(Properties::new());
        }
        let mut r = r.sub_reader(len)?;
        let mut props = Vec::new();
        let mut seen: u64 = 0;
        // A CONNECT's own properties are not counted: a server bounds a CONNECT's size (and
        // keeps none of them); mosquitto's tests send 5,001 user properties in one.
        let max = if ctx == PropertyContext::Connect { usize::MAX } else { r.limits().max_properties };
        while r.remaining() > 0 {
            let raw = r.varint("property identifier")?;
            let id = u8::try_from(raw)
                .ok()
                .and_then(PropertyId::from_u8)
                .ok_or(DecodeError::UnknownProperty(raw.min(255) as u8))?;
            if !id.allowed_in(ctx) {
                return Err(DecodeError::PropertyNotAllowed { property: id, context: ctx });
            }
            let bit = 1u64 << (id as u8);
            if seen & bit != 0 && !id.repeatable_in(ctx) {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
            if props.len() == max {
                return Err(DecodeError::TooManyProperties(max));
            }
            props.push(Property::decode(id, &mut r)?);
        }
        // A long list grew by doubling: what is kept (a deferred or queued packet) holds
        // only its entries.
        if props.capacity() - props.len() > 64 {
            props.shrink_to_fit();
        }
        Ok(Properties(props))
    }

    /// Roughly what the properties hold in memory once decoded (0 when there are none):
    /// their bytes, and for each property its place in the list and the allocations of its
    /// strings. A user property of 7 bytes on the wire takes about 140 in memory; counting
    /// the wire length alone let 1 MB packets of small properties hold 19 MiB each.
    pub fn memory_cost(&self) -> usize {
        /// Two small allocations (a user property's name and value), as malloc rounds them.
        const PER_PROPERTY: usize = std::mem::size_of::<Property>() + 64;
        if self.0.is_empty() {
            return 0;
        }
        self.content_len() + self.0.len() * PER_PROPERTY
    }

    /// The length of the properties themselves, without the length prefix.
    pub(crate) fn content_len(&self) -> usize {
        self.0.iter().map(Property::encoded_len).sum()
    }

    /// The length with the prefix: what the block adds to a packet.
    pub(crate) fn encoded_len(&self) -> usize {
        let n = self.content_len();
        varint_len(n) + n
    }

    pub(crate) fn check(&self, ctx: PropertyContext) -> Result<(), EncodeError> {
        for p in &self.0 {
            if !p.id().allowed_in(ctx) {
                return Err(EncodeError::PropertyNotAllowed { property: p.id(), context: ctx });
            }
        }
        Ok(())
    }

    /// Writes the length and the properties.
    pub(crate) fn encode(&self, out: &mut BytesMut, ctx: PropertyContext) -> Result<(), EncodeError> {
        self.check(ctx)?;
        put_varint(out, self.content_len())?;
        for p in &self.0 {
            p.encode(out)?;
        }
        Ok(())
    }
}

impl From<Vec<Property>> for Properties {
    fn from(v: Vec<Property>) -> Self {
        Properties(v)
    }
}

impl FromIterator<Property> for Properties {
    fn from_iter<T: IntoIterator<Item = Property>>(iter: T) -> Self {
        Properties(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = &'a Property;
    type IntoIter = std::slice::Iter<'a, Property>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_values_are_equal_and_hold_no_slice_of_the_packet() {
        let packet = Bytes::from_static(b"text/plainkeyvalue\x01\x02");
        let slice = |r: std::ops::Range<usize>| ByteString::try_from(packet.slice(r)).unwrap();
        let mut p = Properties::default();
        p.push(Property::ContentType(slice(0..10)));
        p.push(Property::UserProperty(slice(10..13), slice(13..18)));
        p.push(Property::CorrelationData(packet.slice(18..20)));
        p.push(Property::PayloadFormatIndicator(1));
        let d = p.detached();
        assert_eq!(d, p);
        let inside = |ptr: *const u8| packet.as_ptr_range().contains(&ptr);
        for property in d.iter() {
            match property {
                Property::ContentType(v) => assert!(!inside(v.as_ptr())),
                Property::UserProperty(k, v) => assert!(!inside(k.as_ptr()) && !inside(v.as_ptr())),
                Property::CorrelationData(v) => assert!(!inside(v.as_ptr())),
                _ => {}
            }
        }
    }
}
