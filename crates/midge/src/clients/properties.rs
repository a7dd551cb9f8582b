//! `-D command identifier value`: MQTT 5.0 properties by mosquitto's names.
use midge_codec::{Bytes, Properties, Property, PropertyContext, PropertyId};
use thiserror::Error;

use super::c_numbers::atol;

/// Properties given with `-D`, by packet.
#[derive(Debug, Default, Clone)]
pub struct PropertyArgs {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
}

/// Why a `-D` is refused, in mosquitto's words (its clients print them as they are).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PropertyError {
    #[error("Error: --property argument given but not enough arguments specified.")]
    NotEnoughArguments,
    #[error("Error: Invalid command given in --property argument.")]
    InvalidCommand,
    #[error("Error: Invalid property name given in --property argument.")]
    InvalidName,
    #[error("Error: {name} property not allowed for {command} in --property argument.")]
    NotAllowed { name: String, command: String },
    /// A property the packet may carry but mosquitto's clients do not send in it.
    #[error("Error: {name} property not supported for {command} in --property argument.")]
    NotSupported { name: String, command: String },
    #[error("Error: Property value ({value}) out of range for property {name}.")]
    OutOfRange { value: i64, name: String },
    #[error("Error: Property value too long for property {name}.")]
    TooLong { name: String },
    /// Also what mosquitto says when `-x` or `-c` adds a Session Expiry Interval that
    /// `-D connect` already gave.
    #[error("Error in {0} properties: Duplicate property in property list")]
    Duplicate(PropertyContext),
}

impl PropertyError {
    /// Whether mosquitto prints a blank line after it (all but the duplicate, which it finds
    /// after reading every option).
    pub fn spaced(&self) -> bool {
        !matches!(self, PropertyError::Duplicate(_))
    }
}

/// The commands `-D` names, as libmosquitto knows them (case aside).
const COMMANDS: &[(&str, PropertyContext)] = &[
    ("connect", PropertyContext::Connect),
    ("connack", PropertyContext::ConnAck),
    ("publish", PropertyContext::Publish),
    ("puback", PropertyContext::PubAck),
    ("pubrec", PropertyContext::PubRec),
    ("pubrel", PropertyContext::PubRel),
    ("pubcomp", PropertyContext::PubComp),
    ("subscribe", PropertyContext::Subscribe),
    ("suback", PropertyContext::SubAck),
    ("unsubscribe", PropertyContext::Unsubscribe),
    ("unsuback", PropertyContext::UnsubAck),
    ("disconnect", PropertyContext::Disconnect),
    ("auth", PropertyContext::Auth),
    ("will", PropertyContext::Will),
];

const NAMES: &[(&str, PropertyId)] = &[
    ("payload-format-indicator", PropertyId::PayloadFormatIndicator),
    ("message-expiry-interval", PropertyId::MessageExpiryInterval),
    ("content-type", PropertyId::ContentType),
    ("response-topic", PropertyId::ResponseTopic),
    ("correlation-data", PropertyId::CorrelationData),
    ("subscription-identifier", PropertyId::SubscriptionIdentifier),
    ("session-expiry-interval", PropertyId::SessionExpiryInterval),
    ("assigned-client-identifier", PropertyId::AssignedClientIdentifier),
    ("server-keep-alive", PropertyId::ServerKeepAlive),
    ("authentication-method", PropertyId::AuthenticationMethod),
    ("authentication-data", PropertyId::AuthenticationData),
    ("request-problem-information", PropertyId::RequestProblemInformation),
    ("will-delay-interval", PropertyId::WillDelayInterval),
    ("request-response-information", PropertyId::RequestResponseInformation),
    ("response-information", PropertyId::ResponseInformation),
    ("server-reference", PropertyId::ServerReference),
    ("reason-string", PropertyId::ReasonString),
    ("receive-maximum", PropertyId::ReceiveMaximum),
    ("topic-alias-maximum", PropertyId::TopicAliasMaximum),
    ("topic-alias", PropertyId::TopicAlias),
    ("maximum-qos", PropertyId::MaximumQoS),
    ("retain-available", PropertyId::RetainAvailable),
    ("user-property", PropertyId::UserProperty),
    ("maximum-packet-size", PropertyId::MaximumPacketSize),
    ("wildcard-subscription-available", PropertyId::WildcardSubscriptionAvailable),
    ("subscription-identifier-available", PropertyId::SubscriptionIdentifierAvailable),
    ("shared-subscription-available", PropertyId::SharedSubscriptionAvailable),
];

/// A name in `table`, matched without regard to case as libmosquitto does.
fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

impl PropertyArgs {
    /// Parses every `-D` occurrence, given as one list of words: each is a command, an
    /// identifier and one value (two for user-property), checked in mosquitto's order.
    pub fn parse(all: &[String]) -> Result<PropertyArgs, PropertyError> {
        let mut out = PropertyArgs::default();
        let mut words = all;
        while !words.is_empty() {
            let [command, name, rest @ ..] = words else { return Err(PropertyError::NotEnoughArguments) };
            if rest.is_empty() {
                return Err(PropertyError::NotEnoughArguments);
            }
            let ctx = lookup(COMMANDS, command).ok_or(PropertyError::InvalidCommand)?;
            let id = lookup(NAMES, name).ok_or(PropertyError::InvalidName)?;
            let (name, command) = (name.clone(), command.clone());
            if !id.allowed_in(ctx) {
                return Err(PropertyError::NotAllowed { name, command });
            }
            let arity = if id == PropertyId::UserProperty { 2 } else { 1 };
            if rest.len() < arity {
                return Err(PropertyError::NotEnoughArguments);
            }
            let (values, rest) = rest.split_at(arity);
            words = rest;
            let Some(target) = out.list_for(ctx, id) else {
                return Err(PropertyError::NotSupported { name, command });
            };
            let p = value(id, &name, values)?;
            if target.get(id).is_some() && !id.repeatable_in(ctx) {
                return Err(PropertyError::Duplicate(ctx));
            }
            target.push(p);
        }
        Ok(out)
    }

    /// Where a property for `ctx` goes; `None` for what mosquitto's clients do not send
    /// (a Subscription Identifier in PUBLISH, in SUBSCRIBE anything but it and user
    /// properties, and the packets they never send with properties of their own).
    fn list_for(&mut self, ctx: PropertyContext, id: PropertyId) -> Option<&mut Properties> {
        use PropertyContext as C;
        match ctx {
            C::Connect => Some(&mut self.connect),
            C::Publish if id != PropertyId::SubscriptionIdentifier => Some(&mut self.publish),
            C::Subscribe if matches!(id, PropertyId::SubscriptionIdentifier | PropertyId::UserProperty) => {
                Some(&mut self.subscribe)
            }
            C::Unsubscribe => Some(&mut self.unsubscribe),
            C::Disconnect => Some(&mut self.disconnect),
            C::Will => Some(&mut self.will),
            _ => None,
        }
    }
}

/// A property's value, read as mosquitto reads it: numbers with `atol`, in range for their
/// type; binary data up to 65,535 bytes.
fn value(id: PropertyId, name: &str, values: &[String]) -> Result<Property, PropertyError> {
    use Property as P;
    use PropertyId as I;
    let one = values.first().map(String::as_str).unwrap_or_default();
    let number = |max: i64| {
        let value = atol(one);
        if (0..=max).contains(&value) {
            Ok(value)
        } else {
            Err(PropertyError::OutOfRange { value, name: name.to_owned() })
        }
    };
    // In range, so the conversions cannot fail.
    let byte = || number(u8::MAX.into()).map(|v| v as u8);
    let two = || number(u16::MAX.into()).map(|v| v as u16);
    let four = || number(u32::MAX.into()).map(|v| v as u32);
    let text = || midge_codec::ByteString::from(one.to_owned());
    let binary = || {
        if one.len() > usize::from(u16::MAX) {
            return Err(PropertyError::TooLong { name: name.to_owned() });
        }
        Ok(Bytes::from(one.as_bytes().to_vec()))
    };
    Ok(match id {
        I::PayloadFormatIndicator => P::PayloadFormatIndicator(byte()?),
        I::MessageExpiryInterval => P::MessageExpiryInterval(four()?),
        I::ContentType => P::ContentType(text()),
        I::ResponseTopic => P::ResponseTopic(text()),
        I::CorrelationData => P::CorrelationData(binary()?),
        I::SubscriptionIdentifier => P::SubscriptionIdentifier(four()?),
        I::SessionExpiryInterval => P::SessionExpiryInterval(four()?),
        I::AssignedClientIdentifier => P::AssignedClientIdentifier(text()),
        I::ServerKeepAlive => P::ServerKeepAlive(two()?),
        I::AuthenticationMethod => P::AuthenticationMethod(text()),
        I::AuthenticationData => P::AuthenticationData(binary()?),
        I::RequestProblemInformation => P::RequestProblemInformation(byte()?),
        I::WillDelayInterval => P::WillDelayInterval(four()?),
        I::RequestResponseInformation => P::RequestResponseInformation(byte()?),
        I::ResponseInformation => P::ResponseInformation(text()),
        I::ServerReference => P::ServerReference(text()),
        I::ReasonString => P::ReasonString(text()),
        I::ReceiveMaximum => P::ReceiveMaximum(two()?),
        I::TopicAliasMaximum => P::TopicAliasMaximum(two()?),
        I::TopicAlias => P::TopicAlias(two()?),
        I::MaximumQoS => P::MaximumQoS(byte()?),
        I::RetainAvailable => P::RetainAvailable(byte()?),
        I::UserProperty => match values {
            [k, v] => P::UserProperty(k.clone().into(), v.clone().into()),
            _ => return Err(PropertyError::NotEnoughArguments),
        },
        I::MaximumPacketSize => P::MaximumPacketSize(four()?),
        I::WildcardSubscriptionAvailable => P::WildcardSubscriptionAvailable(byte()?),
        I::SubscriptionIdentifierAvailable => P::SubscriptionIdentifierAvailable(byte()?),
        I::SharedSubscriptionAvailable => P::SharedSubscriptionAvailable(byte()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    fn all(list: &[&str]) -> Vec<String> {
        list.iter().flat_map(|s| words(s)).collect()
    }

    #[test]
    fn parses_by_packet() {
        let p = PropertyArgs::parse(&all(&[
            "publish user-property a b",
            "publish user-property a c",
            "publish content-type text/plain",
            "connect session-expiry-interval 60",
        ]))
        .unwrap();
        assert_eq!(p.publish.user_properties().count(), 2);
        assert_eq!(p.publish.content_type().map(|s| &**s), Some("text/plain"));
        assert_eq!(p.connect.session_expiry_interval(), Some(60));
    }

    #[test]
    fn refuses_what_mosquitto_refuses() {
        assert!(PropertyArgs::parse(&words("connect topic-alias 1")).is_err());
        assert!(PropertyArgs::parse(&words("bogus content-type x")).is_err());
        assert!(PropertyArgs::parse(&words("publish no-such-thing x")).is_err());
        assert_eq!(
            PropertyArgs::parse(&words("auth authentication-method x")).unwrap_err().to_string(),
            "Error: authentication-method property not supported for auth in --property argument."
        );
        assert_eq!(
            PropertyArgs::parse(&words("connect receive-maximum 65536")).unwrap_err().to_string(),
            "Error: Property value (65536) out of range for property receive-maximum."
        );
        assert_eq!(
            PropertyArgs::parse(&words("connect user-property k")).unwrap_err(),
            PropertyError::NotEnoughArguments
        );
        assert!(PropertyArgs::parse(&words("CONNECT Receive-Maximum 10")).is_ok());
        let dup = PropertyArgs::parse(&all(&["publish content-type a", "publish content-type b"]));
        assert_eq!(
            dup.unwrap_err().to_string(),
            "Error in PUBLISH properties: Duplicate property in property list"
        );
    }
}
