//! `-D command identifier value`: MQTT 5.0 properties by mosquitto's names.
use midge_codec::{Bytes, Properties, Property, PropertyContext, PropertyId};
use thiserror::Error;

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
    #[error("Error: Invalid property value given in --property argument.")]
    InvalidValue,
    /// Also what mosquitto says when `-x` or `-c` adds a Session Expiry Interval that
    /// `-D connect` already gave.
    #[error("Error in {0} properties: Duplicate property in property list")]
    Duplicate(PropertyContext),
}

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

impl PropertyArgs {
    /// Parses every `-D` occurrence, given as one list of words: each is a command, an
    /// identifier and one value (two for user-property).
    pub fn parse(all: &[String]) -> Result<PropertyArgs, PropertyError> {
        let mut out = PropertyArgs::default();
        let mut words = all;
        while !words.is_empty() {
            let arity = if words.get(1).map(String::as_str) == Some("user-property") { 4 } else { 3 };
            if words.len() < arity {
                return Err(PropertyError::NotEnoughArguments);
            }
            let (this, rest) = words.split_at(arity);
            words = rest;
            let (command, name, values) = (this[0].as_str(), this[1].as_str(), &this[2..]);
            let (ctx, target) = match command {
                "connect" => (PropertyContext::Connect, &mut out.connect),
                "publish" => (PropertyContext::Publish, &mut out.publish),
                "subscribe" => (PropertyContext::Subscribe, &mut out.subscribe),
                "unsubscribe" => (PropertyContext::Unsubscribe, &mut out.unsubscribe),
                "disconnect" => (PropertyContext::Disconnect, &mut out.disconnect),
                "will" => (PropertyContext::Will, &mut out.will),
                _ => return Err(PropertyError::InvalidCommand),
            };
            let id = NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, id)| *id)
                .ok_or(PropertyError::InvalidName)?;
            if !id.allowed_in(ctx) {
                return Err(PropertyError::NotAllowed { name: name.to_owned(), command: command.to_owned() });
            }
            let p = value(id, values)?;
            if target.get(id).is_some() && !id.repeatable_in(ctx) {
                return Err(PropertyError::Duplicate(ctx));
            }
            target.push(p);
        }
        Ok(out)
    }
}

fn value(id: PropertyId, values: &[String]) -> Result<Property, PropertyError> {
    use Property as P;
    use PropertyId as I;
    let bad = || PropertyError::InvalidValue;
    let one = || match values {
        [v] => Ok(v.as_str()),
        _ => Err(bad()),
    };
    let byte = || one()?.parse::<u8>().map_err(|_| bad());
    let two = || one()?.parse::<u16>().map_err(|_| bad());
    let four = || one()?.parse::<u32>().map_err(|_| bad());
    let text = || one().map(|s| midge_codec::ByteString::from(s.to_owned()));
    Ok(match id {
        I::PayloadFormatIndicator => P::PayloadFormatIndicator(byte()?),
        I::MessageExpiryInterval => P::MessageExpiryInterval(four()?),
        I::ContentType => P::ContentType(text()?),
        I::ResponseTopic => P::ResponseTopic(text()?),
        I::CorrelationData => P::CorrelationData(Bytes::from(one()?.as_bytes().to_vec())),
        I::SubscriptionIdentifier => P::SubscriptionIdentifier(four()?),
        I::SessionExpiryInterval => P::SessionExpiryInterval(four()?),
        I::AssignedClientIdentifier => P::AssignedClientIdentifier(text()?),
        I::ServerKeepAlive => P::ServerKeepAlive(two()?),
        I::AuthenticationMethod => P::AuthenticationMethod(text()?),
        I::AuthenticationData => P::AuthenticationData(Bytes::from(one()?.as_bytes().to_vec())),
        I::RequestProblemInformation => P::RequestProblemInformation(byte()?),
        I::WillDelayInterval => P::WillDelayInterval(four()?),
        I::RequestResponseInformation => P::RequestResponseInformation(byte()?),
        I::ResponseInformation => P::ResponseInformation(text()?),
        I::ServerReference => P::ServerReference(text()?),
        I::ReasonString => P::ReasonString(text()?),
        I::ReceiveMaximum => P::ReceiveMaximum(two()?),
        I::TopicAliasMaximum => P::TopicAliasMaximum(two()?),
        I::TopicAlias => P::TopicAlias(two()?),
        I::MaximumQoS => P::MaximumQoS(byte()?),
        I::RetainAvailable => P::RetainAvailable(byte()?),
        I::UserProperty => match values {
            [k, v] => P::UserProperty(k.clone().into(), v.clone().into()),
            _ => return Err(bad()),
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
        let dup = PropertyArgs::parse(&all(&["publish content-type a", "publish content-type b"]));
        assert_eq!(
            dup.unwrap_err().to_string(),
            "Error in PUBLISH properties: Duplicate property in property list"
        );
    }
}
