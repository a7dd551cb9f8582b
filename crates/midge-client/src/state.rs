//! The client's side of the protocol, without I/O: packet identifiers, acknowledgements
//! awaited, the server's Receive Maximum, and exactly-once for incoming QoS 2.
//!
//! Public as [`crate::protocol`] so that tests can drive it with packets in and packets out
//! (against the broker's `Link`, without sockets); applications use [`crate::Client`].
use std::collections::{HashMap, HashSet, VecDeque};

use midge_codec::{
    Packet, ProtocolVersion, Publish, PublishAck, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use tokio::sync::oneshot;

use crate::error::{Error, Kind};

/// Where the outcome of a request goes: the acknowledgement, or the error that ended it.
pub type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Pending {
    Publish { reply: Option<Reply<ReasonCode>> },
    Subscribe(Reply<SubAck>),
    Unsubscribe(Reply<UnsubAck>),
}

/// What an incoming packet means for the application.
#[derive(Debug)]
pub enum Incoming {
    /// Nothing to tell.
    Nothing,
    /// A message to deliver.
    Message(Publish),
    /// The server disconnected us (5.0), with its packet.
    Disconnect(midge_codec::Disconnect),
}

/// The protocol state of one connection.
pub struct State {
    version: ProtocolVersion,
    last_id: u16,
    pending: HashMap<u16, Pending>,
    publishes_in_flight: usize,
    send_quota: usize,
    /// Identifiers of QoS 2 messages received (and delivered) but not yet released: the
    /// PUBLISH may come again before PUBREL and is then not delivered twice (MQTT 4.3.3,
    /// the receiver's "Method B").
    incoming_qos2: HashSet<u16>,
    /// The server's Maximum Packet Size (5.0 CONNACK), in bytes.
    max_packet_size: usize,
    pub(crate) out: VecDeque<Packet>,
}

impl State {
    /// The state of a connection of `version` to a server with this Receive Maximum.
    pub fn new(version: ProtocolVersion, server_receive_maximum: u16) -> Self {
        State {
            version,
            last_id: 0,
            pending: HashMap::new(),
            publishes_in_flight: 0,
            send_quota: usize::from(server_receive_maximum),
            incoming_qos2: HashSet::new(),
            max_packet_size: usize::MAX,
            out: VecDeque::new(),
        }
    }

    /// The server's Maximum Packet Size, from its CONNACK: a PUBLISH, SUBSCRIBE or
    /// UNSUBSCRIBE larger than this is refused instead of sent [MQTT-3.1.2-25].
    pub fn set_server_maximum_packet_size(&mut self, max: Option<u32>) {
        self.max_packet_size = max.map_or(usize::MAX, |m| m as usize);
    }

    /// `Err` (the error for the request's reply) when `packet` cannot be sent: a topic name
    /// longer than a string of the protocol, or more than the server's Maximum Packet Size.
    fn check_size(&self, packet: &Packet) -> Result<(), Error> {
        if let Packet::Publish(p) = packet {
            if p.topic.len() > usize::from(u16::MAX) {
                return Err(Error::new(Kind::Encode(midge_codec::EncodeError::FieldTooLong("topic name"))));
            }
        }
        if self.max_packet_size == usize::MAX {
            return Ok(());
        }
        let size = packet.encoded_len(self.version);
        if size > self.max_packet_size {
            return Err(Error::new(Kind::TooLarge { size, maximum: self.max_packet_size }));
        }
        Ok(())
    }

    fn next_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id != 0 && !self.pending.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// True when a QoS 1 or 2 PUBLISH may be sent now: the server's Receive Maximum is the
    /// limit of unacknowledged ones [MQTT-4.9.0-2].
    pub fn can_publish(&self) -> bool {
        self.publishes_in_flight < self.send_quota && self.pending.len() < usize::from(u16::MAX)
    }

    /// Sends a PUBLISH; QoS 0 is answered at once, QoS 1 and 2 on their acknowledgement.
    pub fn publish(&mut self, mut p: Publish, reply: Option<Reply<ReasonCode>>) {
        // QoS 0 gets no identifier on the wire, but is numbered like the others (as
        // libmosquitto numbers them), which `-d` shows.
        p.packet_id = self.next_id();
        let (id, qos) = (p.packet_id, p.qos);
        let packet = Packet::Publish(p);
        if let Err(e) = self.check_size(&packet) {
            if let Some(r) = reply {
                let _ = r.send(Err(e));
            }
            return;
        }
        self.out.push_back(packet);
        if qos == QoS::AtMostOnce {
            if let Some(r) = reply {
                let _ = r.send(Ok(ReasonCode::Success));
            }
            return;
        }
        self.pending.insert(id, Pending::Publish { reply });
        self.publishes_in_flight += 1;
    }

    /// Sends SUBSCRIBE (with the next packet identifier); `reply` gets the SUBACK.
    pub fn subscribe(&mut self, mut s: Subscribe, reply: Reply<SubAck>) {
        s.packet_id = self.next_id();
        let (id, packet) = (s.packet_id, Packet::Subscribe(s));
        if let Err(e) = self.check_size(&packet) {
            let _ = reply.send(Err(e));
            return;
        }
        self.pending.insert(id, Pending::Subscribe(reply));
        self.out.push_back(packet);
    }

    /// Sends UNSUBSCRIBE (with the next packet identifier); `reply` gets the UNSUBACK.
    pub fn unsubscribe(&mut self, mut u: Unsubscribe, reply: Reply<UnsubAck>) {
        u.packet_id = self.next_id();
        let (id, packet) = (u.packet_id, Packet::Unsubscribe(u));
        if let Err(e) = self.check_size(&packet) {
            let _ = reply.send(Err(e));
            return;
        }
        self.pending.insert(id, Pending::Unsubscribe(reply));
        self.out.push_back(packet);
    }

    /// The packets to send, in order.
    pub fn drain_output(&mut self) -> std::collections::vec_deque::Drain<'_, Packet> {
        self.out.drain(..)
    }

    fn complete_publish(&mut self, id: u16, code: ReasonCode) {
        if let Some(Pending::Publish { reply }) = self.pending.remove(&id) {
            self.publishes_in_flight -= 1;
            if let Some(r) = reply {
                let _ = r.send(Ok(code));
            }
        }
    }

    /// Handles a packet from the server.
    pub fn handle(&mut self, packet: Packet) -> Result<Incoming, Error> {
        match packet {
            Packet::Publish(p) => return Ok(self.on_publish(p)),
            Packet::PubAck(a) => self.complete_publish(a.packet_id, a.reason_code),
            Packet::PubRec(a) => {
                if self.version.is_v5() && a.reason_code.is_error() {
                    // The server refused it: the flow ends here (5.0 section 4.3.3).
                    self.complete_publish(a.packet_id, a.reason_code);
                } else {
                    self.out.push_back(Packet::PubRel(PublishAck::new(a.packet_id)));
                }
            }
            Packet::PubComp(a) => self.complete_publish(a.packet_id, a.reason_code),
            Packet::PubRel(a) => {
                self.incoming_qos2.remove(&a.packet_id);
                self.out.push_back(Packet::PubComp(PublishAck::new(a.packet_id)));
            }
            Packet::SubAck(a) => {
                if let Some(Pending::Subscribe(r)) = self.pending.remove(&a.packet_id) {
                    let _ = r.send(Ok(a));
                }
            }
            Packet::UnsubAck(a) => {
                if let Some(Pending::Unsubscribe(r)) = self.pending.remove(&a.packet_id) {
                    let _ = r.send(Ok(a));
                }
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => return Ok(Incoming::Disconnect(d)),
            Packet::Auth(_) => return Err(Error::protocol("AUTH is not supported by this client")),
            other => {
                return Err(Error::protocol(format!("unexpected {} from the server", other.packet_type())))
            }
        }
        Ok(Incoming::Nothing)
    }

    fn on_publish(&mut self, p: Publish) -> Incoming {
        match p.qos {
            QoS::AtMostOnce => Incoming::Message(p),
            QoS::AtLeastOnce => {
                self.out.push_back(Packet::PubAck(PublishAck::new(p.packet_id)));
                Incoming::Message(p)
            }
            QoS::ExactlyOnce => {
                self.out.push_back(Packet::PubRec(PublishAck::new(p.packet_id)));
                // Delivered now, its identifier kept until PUBREL: a resend before PUBREL is
                // acknowledged again, not delivered twice (MQTT 4.3.3, the receiver's method
                // that stores the identifier). Delivered at once, a message is not lost when
                // the connection ends before PUBREL and the next starts with a new state.
                if self.incoming_qos2.insert(p.packet_id) {
                    Incoming::Message(p)
                } else {
                    Incoming::Nothing
                }
            }
        }
    }

    /// Fails everything still waiting: the connection is gone.
    pub fn fail_all(&mut self, why: impl Fn() -> Error) {
        for (_, p) in self.pending.drain() {
            match p {
                Pending::Publish { reply: Some(r) } => {
                    let _ = r.send(Err(why()));
                }
                Pending::Publish { reply: None } => {}
                Pending::Subscribe(r) => {
                    let _ = r.send(Err(why()));
                }
                Pending::Unsubscribe(r) => {
                    let _ = r.send(Err(why()));
                }
            }
        }
        self.publishes_in_flight = 0;
    }
}

/// The error for a connection that ended.
pub(crate) fn closed() -> Error {
    Error::new(Kind::Closed)
}
