//! Noticing a peer that restarted and forgot its SAs (RFC 7296 section 2.21.4), both ways.
//!
//! - Our side restarted: a request for an IKE SA we do not know is answered, unprotected,
//!   with INVALID_IKE_SPI ([`Endpoint::handle`]), and ESP for a CHILD_SA we do not know is
//!   answered, unprotected, with INVALID_SPI ([`Endpoint::esp_unknown_spi`]). The second
//!   matters because after a restart the peer's payload keeps flowing long before its next
//!   IKE request: without it, the peer notices only when its quiet-period liveness check
//!   has run its backoff.
//! - The peer restarted: neither notice is authenticated, so neither changes an SA. An
//!   INVALID_SPI naming one of our outbound SPIs starts a liveness check (or sends the
//!   request under way again) at once, at most once a second; an INVALID_IKE_SPI answering
//!   our outstanding request (it names our IKE SPIs) hurries that request's verdict to a
//!   few quick tries, after which a peer that really lost the SA is declared dead. A live
//!   peer, the notice forged, simply answers.

use super::*;

/// At most one unprotected INVALID_IKE_SPI answer, and one INVALID_SPI notice, in this
/// time. Two budgets: the liveness check an INVALID_SPI notice provokes must find the
/// INVALID_IKE_SPI answer's budget untouched, one round trip later.
const NOTICE_GAP: Duration = Duration::from_millis(100);
/// After a hint, the liveness check's tries come this often, and this many.
pub(super) const HINTED_GAP: Duration = Duration::from_millis(500);
pub(super) const HINTED_TRIES: u32 = 2;
/// INVALID_SPI notices start at most one liveness check per IKE SA in this time, so that
/// forged ones cost at most an exchange a second.
const NOTICE_CHECK_GAP: Duration = Duration::from_secs(1);

impl Endpoint {
    /// ESP came from `remote` to our port 4500 (or, over IPv6, our address) `local` with
    /// `spi`, which no SA of ours has: the driver's SAD refused it. When no IKE SA runs with
    /// that peer (we restarted and forgot it), the peer is told, unprotected, with an
    /// INFORMATIONAL carrying INVALID_SPI for `spi` (section 2.21.4), so that it checks our
    /// liveness at once instead of after its quiet period. At most ten notices a second (a
    /// budget apart from the INVALID_IKE_SPI answers'); ESP for a stale SPI of a peer we do
    /// have an IKE SA with (after a rekey) is no news and gets none.
    pub fn esp_unknown_spi(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        spi: u32,
    ) {
        // The budget first: a flood of ESP with random SPIs must not cost a walk over
        // every SA per packet.
        if self.esp_notice_sent.is_some_and(|t| now < t + NOTICE_GAP) {
            return;
        }
        let known = self
            .sas
            .values()
            .any(|sa| sa.state == IkeState::Established && sa.remote == remote);
        if known || !Self::notice_allowed(&mut self.esp_notice_sent, now) {
            return;
        }
        let spi = spi.to_be_bytes();
        let m = Message {
            header: HeaderRepr {
                // No IKE SA: a fresh initiator SPI, none for the responder.
                initiator_spi: self.rng.next_u64() | 1,
                responder_spi: 0,
                exchange_type: exchange::INFORMATIONAL,
                flags: flags::I,
                message_id: 0,
            },
            payloads: vec![Payload::Notify(Notify {
                protocol: protocol::ESP,
                spi: &spi,
                kind: notify::INVALID_SPI,
                data: &[],
            })],
        };
        let mut bytes = vec![0u8; m.emit_len()];
        if m.emit(&mut bytes).is_ok() {
            self.counters.invalid_spi_sent += 1;
            self.send(local, remote, &bytes);
        }
    }

    /// Whether an unprotected notice may go now, the last of its kind having gone at
    /// `last` (if so, `last` becomes now).
    pub(super) fn notice_allowed(last: &mut Option<Instant>, now: Instant) -> bool {
        if last.is_some_and(|t| now < t + NOTICE_GAP) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// An unprotected INFORMATIONAL request from `remote`: if it is an INVALID_SPI notice
    /// for one of our outbound ESP SPIs with that peer, a hint (never answered: an answer
    /// to an unauthenticated notice would make us a reflector). True when it was one,
    /// matched or not; false to let the message take the ordinary path.
    pub(super) fn invalid_spi_notice(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        m: &Message,
    ) -> bool {
        let Some(n) = m.notify(notify::INVALID_SPI) else {
            return false;
        };
        if m.payloads
            .iter()
            .any(|p| matches!(p, Payload::Encrypted(_)))
        {
            return false;
        }
        let spi = match <[u8; 4]>::try_from(n.spi) {
            Ok(s) if n.protocol == protocol::ESP => u32::from_be_bytes(s),
            _ => {
                self.counters.drop_malformed += 1;
                return true;
            }
        };
        let id = self.sas.iter().find_map(|(id, sa)| {
            (sa.state == IkeState::Established
                && sa.remote == remote
                && sa.children.iter().any(|c| c.outbound == spi))
            .then_some(*id)
        });
        let Some((id, mut sa)) = id.and_then(|id| Some((id, self.sas.remove(&id)?))) else {
            self.counters.drop_unknown_spi += 1;
            return true;
        };
        if sa
            .last_notice_check
            .map_or(true, |t| now >= t + NOTICE_CHECK_GAP)
        {
            self.counters.invalid_spi_hints += 1;
            sa.last_notice_check = Some(now);
            match sa.outstanding.as_mut() {
                // A request under way goes again now rather than at its backoff: if the
                // peer did restart, its INVALID_IKE_SPI answer (which must name our IKE
                // SPIs, unlike this notice) is what hurries the verdict.
                Some(o) => o.next_at = o.next_at.min(now),
                None => {
                    sa.last_heard = now;
                    self.enqueue(now, &mut sa, Queued::Liveness);
                }
            }
        }
        self.sas.insert(id, sa);
        true
    }

    /// Hurries the outstanding request's verdict: [`HINTED_TRIES`] tries [`HINTED_GAP`]
    /// apart, once per request.
    pub(super) fn hint(&mut self, now: Instant, sa: &mut IkeSa) {
        if let Some(o) = sa.outstanding.as_mut() {
            if !o.hinted {
                self.counters.invalid_spi_hints += 1;
                o.hinted = true;
                o.tries = o.tries.max(HINTED_TRIES - 1);
                o.next_at = o.next_at.min(now + HINTED_GAP);
            }
        }
    }
}
