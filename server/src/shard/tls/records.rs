//! The TLS record layer of an established connection: records in, plaintext
//! out, and plaintext sealed into records (RFC 8446 §5 for TLS 1.3; RFC 5246
//! §6.2 with RFC 5288 AES-GCM and RFC 7905 ChaCha20-Poly1305 for TLS 1.2).
//!
//! Why ours and not rustls's: a rustls session is ~3.9 KB per connection
//! whether or not anything moves (its deframer, queues, key schedule and
//! AEAD contexts), which put an idle TLS WebSocket over the 4 KiB budget.
//! Once the handshake is done, rustls hands the traffic keys over
//! (`dangerous_into_kernel_connection`, the API made for kTLS), and what a
//! connection must keep shrinks to two AEAD keys with their IVs and
//! sequence numbers — plus, for TLS 1.3, rustls's key schedule, which
//! derives the next keys when either side sends a KeyUpdate.
//!
//! The AEAD is aws-lc-rs's plain `LessSafeKey` with the nonce built here
//! (the IV XOR the sequence number). rustls's own AES-GCM record encrypter
//! cannot be reused: it is aws-lc's TLS-specific key, which takes the first
//! record it seals to be sequence number 0, and after a handshake ours is
//! not (the server's tickets or Finished went out under the same key).
//!
//! After the handshake, a server receives only application data, alerts
//! and — in TLS 1.3 — KeyUpdate; anything else is a fatal
//! `unexpected_message`. Every failure seals its fatal alert for the peer.

use std::fmt;
use std::ops::Range;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::crypto::cipher::AeadKey;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};

/// Record content types (RFC 8446 §5.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// Alert descriptions (RFC 8446 §6).
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;
const USER_CANCELED: u8 = 90;

/// Largest plaintext per record (RFC 8446 §5.1).
pub const MAX_PLAIN: usize = 16 * 1024;
/// The most a record adds to its plaintext (TLS 1.2 AES-GCM: a 5-byte
/// header, an 8-byte explicit nonce and a 16-byte tag).
pub const MAX_OVERHEAD: usize = 29;
const HEADER: usize = 5;
const TAG: usize = 16;
/// Records an AES-GCM key may seal before it is replaced (rustls's
/// confidentiality limit for AES-GCM, 2^24); ChaCha20-Poly1305 has none.
const AES_GCM_LIMIT: u64 = 1 << 24;
/// A TLS 1.3 KeyUpdate message, `update_not_requested` (RFC 8446 §4.6.3).
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

/// Why the record layer gave up. Each has its alert for the peer.
#[derive(Debug)]
pub enum RecordError {
    /// A record did not authenticate: tampered, or out of order.
    BadRecordMac,
    /// A record longer than the protocol allows.
    Overflow,
    /// A record type or message a server cannot get after the handshake.
    Unexpected(&'static str),
    /// A record or alert that does not parse.
    Decode(&'static str),
    /// The peer sent a fatal alert (its description); nothing goes back.
    PeerAlert(u8),
    /// A key reached its record limit, or a sequence number ran out, on a
    /// connection that cannot replace its keys (TLS 1.2).
    Exhausted,
    /// rustls could not take the keys over or derive new ones.
    Keys(rustls::Error),
    /// The AEAD refused to seal (cannot happen with valid keys).
    Seal,
}

impl RecordError {
    /// The fatal alert this failure sends, if any.
    fn alert(&self) -> Option<u8> {
        Some(match self {
            RecordError::BadRecordMac => BAD_RECORD_MAC,
            RecordError::Overflow => RECORD_OVERFLOW,
            RecordError::Unexpected(_) => UNEXPECTED_MESSAGE,
            RecordError::Decode(_) => DECODE_ERROR,
            RecordError::PeerAlert(_) => return None,
            RecordError::Exhausted | RecordError::Keys(_) | RecordError::Seal => INTERNAL_ERROR,
        })
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::BadRecordMac => f.write_str("a record failed authentication"),
            RecordError::Overflow => f.write_str("a record longer than TLS allows"),
            RecordError::Unexpected(what) => write!(f, "unexpected after the handshake: {what}"),
            RecordError::Decode(what) => write!(f, "malformed {what}"),
            RecordError::PeerAlert(d) => write!(f, "the peer sent fatal alert {d}"),
            RecordError::Exhausted => f.write_str("the record sequence ran out"),
            RecordError::Keys(e) => write!(f, "traffic keys: {e}"),
            RecordError::Seal => f.write_str("the AEAD refused to seal"),
        }
    }
}

/// How records are laid out and authenticated: TLS 1.3 hides the content
/// type inside the encryption; TLS 1.2 authenticates the sequence number
/// and header as associated data, with an explicit nonce for AES-GCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Tls13,
    Tls12Gcm,
    Tls12Chacha,
}

impl Framing {
    /// The longest ciphertext a record may carry (RFC 8446 §5.2, RFC 5246
    /// §6.2.3).
    fn max_ciphertext(self) -> usize {
        match self {
            Framing::Tls13 => MAX_PLAIN + 256,
            _ => MAX_PLAIN + 2048,
        }
    }
}

/// One direction's traffic key.
///
/// The AEAD context the key expands to (~600 bytes in aws-lc: the AES key
/// schedule and GHASH tables) is made when a record needs it and dropped
/// when the connection rests ([`Records::rest`]); the 32 bytes of key
/// material are kept (rustls's `AeadKey`, zeroed on drop). An idle
/// connection so holds no AEAD context at all.
struct Key {
    material: AeadKey,
    algorithm: &'static aead::Algorithm,
    /// The expanded key, while the connection is in use.
    aead: Option<LessSafeKey>,
    /// The IV; for TLS 1.2 AES-GCM, the 4-byte salt then the base of the
    /// explicit nonces.
    iv: [u8; NONCE_LEN],
    /// The sequence number of the next record.
    seq: u64,
    /// Records it may seal before it must be replaced.
    limit: u64,
}

impl Key {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Key, RecordError> {
        let (algorithm, material, iv, limit) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&aead::AES_128_GCM, key, iv, AES_GCM_LIMIT)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&aead::AES_256_GCM, key, iv, AES_GCM_LIMIT)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, u64::MAX)
            }
            _ => return Err(RecordError::Unexpected("a cipher this node does not offer")),
        };
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::Keys(rustls::Error::General("IV length".into())))?;
        let mut key = Key {
            material,
            algorithm,
            aead: None,
            iv,
            seq,
            limit,
        };
        key.aead()?;
        Ok(key)
    }

    /// The expanded key, made if the connection rested.
    fn aead(&mut self) -> Result<&LessSafeKey, RecordError> {
        if self.aead.is_none() {
            let key = UnboundKey::new(self.algorithm, self.material.as_ref())
                .map_err(|_| RecordError::Keys(rustls::Error::General("AEAD key length".into())))?;
            self.aead = Some(LessSafeKey::new(key));
        }
        Ok(self.aead.as_ref().expect("just made"))
    }

    /// The nonce of the next record: the IV XOR the sequence number
    /// (RFC 8446 §5.3; rustls builds TLS 1.2's explicit nonces the same way).
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// Moves to the next sequence number.
    fn advance(&mut self) -> Result<(), RecordError> {
        self.seq = self.seq.checked_add(1).ok_or(RecordError::Exhausted)?;
        Ok(())
    }
}

/// TLS 1.2's associated data: sequence number, type, version, length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&[3, 3]);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// What [`Records::open`] did.
#[derive(Debug)]
pub struct Opened {
    /// Bytes consumed; the rest (part of a record) is offered again in
    /// front of the next receive.
    pub used: usize,
    /// The peer sent `close_notify`: what follows it was ignored.
    pub peer_closed: bool,
    /// The layer failed; its alert, if any, is in the `flight`.
    pub error: Option<RecordError>,
}

/// An established connection's record layer. See the module docs.
pub struct Records {
    framing: Framing,
    tx: Key,
    rx: Key,
    /// TLS 1.3's key schedule, which derives the keys a KeyUpdate asks for;
    /// none for TLS 1.2, which cannot change keys.
    schedule: Option<Box<KernelConnection<ServerConnectionData>>>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("framing", &self.framing)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Takes over from rustls once its handshake is done (it has sent all
    /// it had to send, tickets included).
    pub fn new(
        secrets: ExtractedSecrets,
        schedule: KernelConnection<ServerConnectionData>,
    ) -> Result<Records, RecordError> {
        let version = schedule.protocol_version();
        let chacha = matches!(
            secrets.tx.1,
            ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
        );
        let framing = match version {
            ProtocolVersion::TLSv1_3 => Framing::Tls13,
            ProtocolVersion::TLSv1_2 if chacha => Framing::Tls12Chacha,
            ProtocolVersion::TLSv1_2 => Framing::Tls12Gcm,
            _ => {
                return Err(RecordError::Unexpected(
                    "a TLS version this node does not offer",
                ))
            }
        };
        Ok(Records {
            framing,
            tx: Key::new(secrets.tx)?,
            rx: Key::new(secrets.rx)?,
            schedule: (framing == Framing::Tls13).then(|| Box::new(schedule)),
        })
    }

    /// Decrypts the complete records at the front of `buf` in place:
    /// application data is appended to `plain`; records this layer answers
    /// (a KeyUpdate, a fatal alert) are appended to `flight`.
    pub fn open(&mut self, buf: &mut [u8], plain: &mut Vec<u8>, flight: &mut Vec<u8>) -> Opened {
        let mut at = 0;
        let opened = |used, peer_closed, error| Opened {
            used,
            peer_closed,
            error,
        };
        while buf.len() - at >= HEADER {
            let head = &buf[at..at + HEADER];
            let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
            let error = if head[1] != 3 {
                Some(RecordError::Decode("record header"))
            } else if len > self.framing.max_ciphertext() {
                Some(RecordError::Overflow)
            } else {
                None
            };
            if let Some(e) = error {
                self.fail(&e, flight);
                return opened(at, false, Some(e));
            }
            if buf.len() - at < HEADER + len {
                break;
            }
            let record = &mut buf[at..at + HEADER + len];
            at += HEADER + len;
            let outcome = self
                .decrypt(record)
                .and_then(|(typ, content)| self.dispatch(typ, &record[content], plain, flight));
            match outcome {
                Ok(false) => {}
                // close_notify: whatever follows is ignored.
                Ok(true) => return opened(buf.len(), true, None),
                Err(e) => {
                    self.fail(&e, flight);
                    return opened(at, false, Some(e));
                }
            }
        }
        opened(at, false, None)
    }

    /// Seals `pt` (at most [`MAX_PLAIN`] bytes) as one record of type
    /// `typ`, appended to `out`; a TLS 1.3 key worn out by its record limit
    /// is replaced first, announced by a KeyUpdate record.
    pub fn seal(&mut self, typ: u8, pt: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        debug_assert!(pt.len() <= MAX_PLAIN);
        if self.tx.seq >= self.tx.limit {
            if self.schedule.is_none() {
                return Err(RecordError::Exhausted);
            }
            self.update_tx(out)?;
        }
        self.seal_record(typ, pt, out)
    }

    /// Seals one record with the current key.
    fn seal_record(&mut self, typ: u8, pt: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let start = out.len();
        let seq = self.tx.seq;
        // TLS 1.2 AES-GCM sends the nonce's last 8 bytes as its explicit
        // nonce.
        let explicit = self.tx.nonce();
        let nonce = Nonce::assume_unique_for_key(explicit);
        let key = self.tx.aead()?;
        let tag = match self.framing {
            Framing::Tls13 => {
                let header = record_header(APPLICATION_DATA, pt.len() + 1 + TAG);
                out.extend_from_slice(&header);
                out.extend_from_slice(pt);
                out.push(typ);
                key.seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            }
            Framing::Tls12Gcm => {
                out.extend_from_slice(&record_header(typ, 8 + pt.len() + TAG));
                out.extend_from_slice(&explicit[4..]);
                out.extend_from_slice(pt);
                let aad = Aad::from(tls12_aad(seq, typ, pt.len()));
                key.seal_in_place_separate_tag(nonce, aad, &mut out[start + HEADER + 8..])
            }
            Framing::Tls12Chacha => {
                out.extend_from_slice(&record_header(typ, pt.len() + TAG));
                out.extend_from_slice(pt);
                let aad = Aad::from(tls12_aad(seq, typ, pt.len()));
                key.seal_in_place_separate_tag(nonce, aad, &mut out[start + HEADER..])
            }
        };
        let Ok(tag) = tag else {
            out.truncate(start);
            return Err(RecordError::Seal);
        };
        out.extend_from_slice(tag.as_ref());
        self.tx.advance()
    }

    /// Sends a KeyUpdate under the current key, then switches to the next
    /// (TLS 1.3 only).
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let schedule = self.schedule.as_mut().ok_or(RecordError::Exhausted)?;
        let next = schedule.update_tx_secret().map_err(RecordError::Keys)?;
        self.seal_record(HANDSHAKE, &KEY_UPDATE, out)?;
        self.tx = Key::new(next)?;
        Ok(())
    }

    /// Authenticates and decrypts one whole record in place; returns its
    /// content type and where its content is.
    fn decrypt(&mut self, record: &mut [u8]) -> Result<(u8, Range<usize>), RecordError> {
        let (head, body) = record.split_at_mut(HEADER);
        let outer = head[0];
        let nonce = self.rx.nonce();
        let seq = self.rx.seq;
        let framing = self.framing;
        let key = self.rx.aead()?;
        let (typ, content) = match framing {
            Framing::Tls13 => {
                if outer != APPLICATION_DATA {
                    return Err(RecordError::Unexpected("an unencrypted record"));
                }
                let aad = Aad::from(<[u8; HEADER]>::try_from(&*head).expect("a header"));
                let nonce = Nonce::assume_unique_for_key(nonce);
                let inner = key
                    .open_in_place(nonce, aad, body)
                    .map_err(|_| RecordError::BadRecordMac)?;
                // The content type is the last byte that is not padding.
                let end = inner
                    .iter()
                    .rposition(|&b| b != 0)
                    .ok_or(RecordError::Unexpected("a record without a content type"))?;
                (inner[end], HEADER..HEADER + end)
            }
            Framing::Tls12Gcm => {
                if body.len() < 8 + TAG {
                    return Err(RecordError::Decode("record"));
                }
                let mut nonce = nonce;
                nonce[4..].copy_from_slice(&body[..8]);
                let len = body.len() - 8 - TAG;
                let aad = Aad::from(tls12_aad(seq, outer, len));
                let nonce = Nonce::assume_unique_for_key(nonce);
                key.open_in_place(nonce, aad, &mut body[8..])
                    .map_err(|_| RecordError::BadRecordMac)?;
                (outer, HEADER + 8..HEADER + 8 + len)
            }
            Framing::Tls12Chacha => {
                if body.len() < TAG {
                    return Err(RecordError::Decode("record"));
                }
                let len = body.len() - TAG;
                let aad = Aad::from(tls12_aad(seq, outer, len));
                let nonce = Nonce::assume_unique_for_key(nonce);
                key.open_in_place(nonce, aad, body)
                    .map_err(|_| RecordError::BadRecordMac)?;
                (outer, HEADER..HEADER + len)
            }
        };
        if content.len() > MAX_PLAIN {
            return Err(RecordError::Overflow);
        }
        self.rx.advance()?;
        Ok((typ, content))
    }

    /// Acts on one decrypted record; `Ok(true)` when it was `close_notify`.
    fn dispatch(
        &mut self,
        typ: u8,
        content: &[u8],
        plain: &mut Vec<u8>,
        flight: &mut Vec<u8>,
    ) -> Result<bool, RecordError> {
        match typ {
            APPLICATION_DATA => plain.extend_from_slice(content),
            ALERT => {
                let &[level, description] = content else {
                    return Err(RecordError::Decode("alert"));
                };
                if description == CLOSE_NOTIFY {
                    return Ok(true);
                }
                // TLS 1.3: every alert but user_canceled is fatal, whatever
                // its level (RFC 8446 §6); TLS 1.2: warnings may be ignored.
                let warning = match self.framing {
                    Framing::Tls13 => description == USER_CANCELED,
                    _ => level == 1,
                };
                if !warning {
                    return Err(RecordError::PeerAlert(description));
                }
            }
            HANDSHAKE if self.schedule.is_some() => {
                // The one handshake message a TLS 1.3 server can get now.
                let &[24, 0, 0, 1, requested @ (0 | 1)] = content else {
                    return Err(RecordError::Unexpected("a handshake message"));
                };
                let schedule = self.schedule.as_mut().expect("TLS 1.3");
                self.rx = Key::new(schedule.update_rx_secret().map_err(RecordError::Keys)?)?;
                if requested == 1 {
                    self.update_tx(flight)?;
                }
            }
            // TLS 1.2 renegotiation is not offered.
            HANDSHAKE => return Err(RecordError::Unexpected("renegotiation")),
            CHANGE_CIPHER_SPEC => return Err(RecordError::Unexpected("change_cipher_spec")),
            _ => return Err(RecordError::Unexpected("an unknown record type")),
        }
        Ok(false)
    }

    /// Seals the fatal alert for `e`, if it has one.
    fn fail(&mut self, e: &RecordError, flight: &mut Vec<u8>) {
        if let Some(description) = e.alert() {
            let _ = self.seal_record(ALERT, &[2, description], flight);
        }
    }

    /// Drops both expanded keys: the connection is idle. The next record
    /// either way expands its key again (~0.2 µs). Returns whether any
    /// was expanded.
    pub fn rest(&mut self) -> bool {
        let awake = self.tx.aead.is_some() || self.rx.aead.is_some();
        self.tx.aead = None;
        self.rx.aead = None;
        awake
    }

    /// Whether both keys are expanded (tests).
    #[cfg(test)]
    pub fn is_awake(&self) -> bool {
        self.tx.aead.is_some() && self.rx.aead.is_some()
    }

    /// `close_notify`, sealed.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal(ALERT, &[1, CLOSE_NOTIFY], out)
    }

    /// Makes the next key worn out after `records` more (tests).
    #[cfg(test)]
    pub fn wear_tx_key(&mut self, records: u64) {
        self.tx.limit = self.tx.seq + records;
    }
}

/// A record header: type, version 1.2 (as TLS 1.3 also writes it), length.
fn record_header(typ: u8, len: usize) -> [u8; HEADER] {
    let [hi, lo] = (len as u16).to_be_bytes();
    [typ, 3, 3, hi, lo]
}
