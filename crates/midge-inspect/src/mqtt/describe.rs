//! Every field of a decoded packet, named, with the key ones marked for the one-line summary.
//! Names follow the specification's (snake_case); reason codes carry the name the
//! specification gives them in that packet (MQTT 5.0 section 2.4, 3.1.1 section 3.2.2.3).
use midge_codec::{
    ConnectReturnCode, Packet, Properties, Property, ProtocolVersion, PublishAck, ReasonCode,
    SubscriptionOptions,
};

use crate::report::{Field, Value};

/// The fields of `packet`, sent on a stream of `version`; `topic` is a PUBLISH's topic with
/// its alias resolved.
pub fn fields(packet: &Packet, version: ProtocolVersion, topic: Option<&str>) -> Vec<Field> {
    let v5 = version.is_v5();
    let mut f = Vec::new();
    match packet {
        Packet::Connect(c) => {
            f.push(Field::key("version", Value::Text(c.protocol.to_string())));
            f.push(Field::detail("protocol_name", Value::Text(c.protocol.protocol_name().into())));
            f.push(Field::detail("protocol_level", Value::Int(c.protocol.level().into())));
            let clean = if c.protocol.is_v5() { "clean_start" } else { "clean_session" };
            f.push(Field::key(clean, Value::Bool(c.clean_start)));
            f.push(Field::key("keep_alive", Value::Int(c.keep_alive.into())));
            f.push(Field::detail("client_id", Value::Text(c.client_id.to_string())));
            if let Some(u) = &c.username {
                f.push(Field::key("username", Value::Text(u.to_string())));
            }
            if let Some(p) = &c.password {
                f.push(Field::key("password", Value::Secret(p.clone())));
            }
            if let Some(w) = &c.will {
                let mut will = vec![
                    Field::key("topic", Value::Text(w.topic.to_string())),
                    Field::key("qos", Value::Int(w.qos.as_u8().into())),
                    Field::key("retain", Value::Bool(w.retain)),
                    Field::detail("payload", Value::Bytes(w.payload.clone())),
                ];
                push_properties(&mut will, &w.properties);
                f.push(Field::key("will", Value::Group(will)));
            }
            push_properties(&mut f, &c.properties);
        }
        Packet::ConnAck(a) => {
            f.push(Field::key("session_present", Value::Bool(a.session_present)));
            if v5 {
                f.push(Field::key("reason", reason(a.reason_code, Context::Other)));
            } else {
                let rc = ConnectReturnCode::from_reason(a.reason_code);
                f.push(Field::key(
                    "return_code",
                    Value::Reason { code: rc as u8, name: return_code_name(rc) },
                ));
            }
            push_properties(&mut f, &a.properties);
        }
        Packet::Publish(p) => {
            let shown = topic.map(str::to_string).unwrap_or_else(|| p.topic.to_string());
            f.push(Field::key("topic", Value::Text(shown)));
            f.push(Field::key("qos", Value::Int(p.qos.as_u8().into())));
            f.push(Field::key("retain", Value::Bool(p.retain)));
            f.push(Field { name: "dup", value: Value::Bool(p.dup), key: p.dup });
            if p.qos.as_u8() > 0 {
                f.push(Field::key("packet_id", Value::Int(p.packet_id.into())));
            }
            f.push(Field::key("payload", Value::Bytes(p.payload.clone())));
            f.push(Field::detail("payload_length", Value::Int(p.payload.len() as u64)));
            push_properties(&mut f, &p.properties);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => ack(&mut f, a, v5),
        Packet::Subscribe(s) => {
            f.push(Field::key("packet_id", Value::Int(s.packet_id.into())));
            let subs = s.filters.iter().map(|(filter, o)| subscription(filter, o, v5)).collect();
            f.push(Field::key("subscriptions", Value::List(subs)));
            push_properties(&mut f, &s.properties);
        }
        Packet::SubAck(s) => {
            f.push(Field::key("packet_id", Value::Int(s.packet_id.into())));
            let codes = s.reason_codes.iter().map(|c| suback_code(*c, v5)).collect();
            f.push(Field::key("reason_codes", Value::List(codes)));
            push_properties(&mut f, &s.properties);
        }
        Packet::Unsubscribe(u) => {
            f.push(Field::key("packet_id", Value::Int(u.packet_id.into())));
            let filters = u.filters.iter().map(|t| Value::Text(t.to_string())).collect();
            f.push(Field::key("filters", Value::List(filters)));
            push_properties(&mut f, &u.properties);
        }
        Packet::UnsubAck(u) => {
            f.push(Field::key("packet_id", Value::Int(u.packet_id.into())));
            if v5 {
                let codes = u.reason_codes.iter().map(|c| reason(*c, Context::Other)).collect();
                f.push(Field::key("reason_codes", Value::List(codes)));
            }
            push_properties(&mut f, &u.properties);
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                f.push(Field::key("reason", reason(d.reason_code, Context::Disconnect)));
            }
            push_properties(&mut f, &d.properties);
        }
        Packet::Auth(a) => {
            f.push(Field::key("reason", reason(a.reason_code, Context::Other)));
            push_properties(&mut f, &a.properties);
        }
    }
    f
}

fn ack(f: &mut Vec<Field>, a: &PublishAck, v5: bool) {
    f.push(Field::key("packet_id", Value::Int(a.packet_id.into())));
    if v5 {
        f.push(Field::key("reason", reason(a.reason_code, Context::Other)));
    }
    push_properties(f, &a.properties);
}

fn subscription(filter: &str, o: &SubscriptionOptions, v5: bool) -> Value {
    let mut g = vec![
        Field::key("filter", Value::Text(filter.to_string())),
        Field::key("qos", Value::Int(o.qos.as_u8().into())),
    ];
    if v5 {
        // MQTT 5.0, section 3.8.3.1: the subscription options byte.
        g.push(Field::detail("no_local", Value::Bool(o.no_local)));
        g.push(Field::detail("retain_as_published", Value::Bool(o.retain_as_published)));
        g.push(Field::detail("retain_handling", Value::Int(o.retain_handling as u64)));
    }
    Value::Group(g)
}

/// Where a reason code is, for the name of 0x00.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Disconnect,
    Other,
}

fn reason(code: ReasonCode, ctx: Context) -> Value {
    let name = match (code, ctx) {
        (ReasonCode::Success, Context::Disconnect) => "Normal disconnection",
        (c, _) => c.description(),
    };
    Value::Reason { code: code.as_u8(), name }
}

/// SUBACK return codes: granted QoS 0 to 2, or failure (3.1.1 section 3.9.3; 5.0 section 3.9.3).
fn suback_code(code: ReasonCode, v5: bool) -> Value {
    let name = match code.as_u8() {
        0 => "Granted QoS 0",
        0x80 if !v5 => "Failure",
        _ => code.description(),
    };
    Value::Reason { code: code.as_u8(), name }
}

/// 3.1.1 CONNACK return codes (section 3.2.2.3, table 3.1).
fn return_code_name(rc: ConnectReturnCode) -> &'static str {
    match rc {
        ConnectReturnCode::Accepted => "Connection Accepted",
        ConnectReturnCode::UnacceptableProtocolVersion => "Unacceptable protocol version",
        ConnectReturnCode::IdentifierRejected => "Identifier rejected",
        ConnectReturnCode::ServerUnavailable => "Server unavailable",
        ConnectReturnCode::BadUserNameOrPassword => "Bad user name or password",
        ConnectReturnCode::NotAuthorized => "Not authorized",
    }
}

/// Adds a "properties" group when there are any (MQTT 5.0, section 2.2.2.2). The reason
/// string, an assigned client identifier, a topic alias and an authentication method are key.
fn push_properties(f: &mut Vec<Field>, props: &Properties) {
    if props.is_empty() {
        return;
    }
    let mut g = Vec::new();
    let mut user = Vec::new();
    let mut sub_ids = Vec::new();
    for p in props.iter() {
        use Property as P;
        let (name, value) = match p {
            P::UserProperty(k, v) => {
                user.push(Value::Group(vec![
                    Field::key("name", Value::Text(k.to_string())),
                    Field::key("value", Value::Text(v.to_string())),
                ]));
                continue;
            }
            P::SubscriptionIdentifier(id) => {
                sub_ids.push(Value::Int((*id).into()));
                continue;
            }
            P::PayloadFormatIndicator(v) => ("payload_format_indicator", Value::Int((*v).into())),
            P::MessageExpiryInterval(v) => ("message_expiry_interval", Value::Int((*v).into())),
            P::ContentType(v) => ("content_type", Value::Text(v.to_string())),
            P::ResponseTopic(v) => ("response_topic", Value::Text(v.to_string())),
            P::CorrelationData(v) => ("correlation_data", Value::Bytes(v.clone())),
            P::SessionExpiryInterval(v) => ("session_expiry_interval", Value::Int((*v).into())),
            P::AssignedClientIdentifier(v) => ("assigned_client_identifier", Value::Text(v.to_string())),
            P::ServerKeepAlive(v) => ("server_keep_alive", Value::Int((*v).into())),
            P::AuthenticationMethod(v) => ("authentication_method", Value::Text(v.to_string())),
            P::AuthenticationData(v) => ("authentication_data", Value::Bytes(v.clone())),
            P::RequestProblemInformation(v) => ("request_problem_information", Value::Int((*v).into())),
            P::WillDelayInterval(v) => ("will_delay_interval", Value::Int((*v).into())),
            P::RequestResponseInformation(v) => ("request_response_information", Value::Int((*v).into())),
            P::ResponseInformation(v) => ("response_information", Value::Text(v.to_string())),
            P::ServerReference(v) => ("server_reference", Value::Text(v.to_string())),
            P::ReasonString(v) => ("reason_string", Value::Text(v.to_string())),
            P::ReceiveMaximum(v) => ("receive_maximum", Value::Int((*v).into())),
            P::TopicAliasMaximum(v) => ("topic_alias_maximum", Value::Int((*v).into())),
            P::TopicAlias(v) => ("topic_alias", Value::Int((*v).into())),
            P::MaximumQoS(v) => ("maximum_qos", Value::Int((*v).into())),
            P::RetainAvailable(v) => ("retain_available", Value::Int((*v).into())),
            P::MaximumPacketSize(v) => ("maximum_packet_size", Value::Int((*v).into())),
            P::WildcardSubscriptionAvailable(v) => {
                ("wildcard_subscription_available", Value::Int((*v).into()))
            }
            P::SubscriptionIdentifierAvailable(v) => {
                ("subscription_identifier_available", Value::Int((*v).into()))
            }
            P::SharedSubscriptionAvailable(v) => ("shared_subscription_available", Value::Int((*v).into())),
        };
        let key = matches!(
            name,
            "reason_string" | "assigned_client_identifier" | "topic_alias" | "authentication_method"
        );
        g.push(Field { name, value, key });
    }
    if !sub_ids.is_empty() {
        g.push(Field::detail("subscription_identifiers", Value::List(sub_ids)));
    }
    if !user.is_empty() {
        g.push(Field::detail("user_properties", Value::List(user)));
    }
    let key = g.iter().any(|f| f.key);
    f.push(Field { name: "properties", value: Value::Group(g), key });
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{Bytes, Connect, Publish, QoS, SubAck};

    fn get<'a>(fields: &'a [Field], name: &str) -> Option<&'a Value> {
        fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    #[test]
    fn connect_fields_hide_nothing_but_mark_the_password_secret() {
        let mut c = Connect::new(ProtocolVersion::V3_1_1, "sensor-1");
        c.username = Some("alice".into());
        c.password = Some(Bytes::from_static(b"s3cret"));
        let f = fields(&Packet::Connect(Box::new(c)), ProtocolVersion::V3_1_1, None);
        assert_eq!(get(&f, "username"), Some(&Value::Text("alice".into())));
        assert_eq!(get(&f, "password"), Some(&Value::Secret(Bytes::from_static(b"s3cret"))));
        assert_eq!(get(&f, "clean_session"), Some(&Value::Bool(true)));
        assert_eq!(get(&f, "version"), Some(&Value::Text("3.1.1".into())));
    }

    #[test]
    fn publish_fields_and_properties() {
        let mut p = Publish::new("", Bytes::from_static(b"21.5"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = 7;
        p.properties.push(Property::TopicAlias(3));
        p.properties.push(Property::UserProperty("k".into(), "v".into()));
        let f = fields(&Packet::Publish(p), ProtocolVersion::V5, Some("sensors/kitchen"));
        assert_eq!(get(&f, "topic"), Some(&Value::Text("sensors/kitchen".into())));
        assert_eq!(get(&f, "packet_id"), Some(&Value::Int(7)));
        let Some(Value::Group(props)) = get(&f, "properties") else { panic!("no properties") };
        assert_eq!(get(props, "topic_alias"), Some(&Value::Int(3)));
        assert!(get(props, "user_properties").is_some());
        assert!(!f.iter().find(|x| x.name == "dup").unwrap().key);
    }

    #[test]
    fn suback_codes_are_named_per_version() {
        let s = SubAck {
            packet_id: 1,
            properties: Properties::new(),
            reason_codes: vec![ReasonCode::Success, ReasonCode::GrantedQoS2, ReasonCode::UnspecifiedError],
        };
        let f = fields(&Packet::SubAck(s), ProtocolVersion::V3_1_1, None);
        let Some(Value::List(codes)) = get(&f, "reason_codes") else { panic!() };
        assert_eq!(
            codes,
            &vec![
                Value::Reason { code: 0, name: "Granted QoS 0" },
                Value::Reason { code: 2, name: "Granted QoS 2" },
                Value::Reason { code: 0x80, name: "Failure" },
            ]
        );
    }
}
