//! The CREATE_CHILD_SA exchange (RFC 7296 section 1.3), both roles: a new CHILD_SA
//! (1.3.1; RFC 4877 needs two per mobile node, the MH transport SA and the payload tunnel
//! SA), the rekey of a CHILD_SA (1.3.3, then a Delete of the old pair, section 2.8) and the
//! rekey of the IKE SA itself (1.3.2 and 2.18, the CHILD_SAs moving to the new one).
//!
//! "Initiator" and "responder" here are those of the exchange: TSi is the requester's side,
//! and the CHILD_SA keys are taken requester-to-responder first (section 2.17).
//! A rekey request for a CHILD_SA that we are rekeying ourselves is answered with
//! TEMPORARY_FAILURE (section 2.25) and ours goes on; a peer that gets TEMPORARY_FAILURE
//! for its own tries again later. That avoids section 2.8.1's duplicate SAs at the cost of
//! a retry when both ends' timers fire together.

use super::*;

/// Our CREATE_CHILD_SA request under way, remembered until its answer.
#[cfg_attr(any(test, feature = "fixtures"), derive(Clone))]
pub(super) enum Pending {
    /// A new or rekeyed CHILD_SA.
    Child {
        config: usize,
        inbound: u32,
        ni: Vec<u8>,
        keypair: Option<KeyPair>,
        tsi: Vec<TrafficSelector>,
        tsr: Vec<TrafficSelector>,
        rekeys: Option<u32>,
    },
    /// A rekey of the IKE SA, with our SPI of the new one.
    Ike {
        spi: u64,
        ni: Vec<u8>,
        keypair: KeyPair,
    },
}

/// The payloads of a CREATE_CHILD_SA message, gathered.
#[derive(Default)]
struct Parts<'m, 'a> {
    sa: Option<&'m SaPayload>,
    nonce: Option<&'a [u8]>,
    ke: Option<KeyExchange<'a>>,
    tsi: Vec<TrafficSelector>,
    tsr: Vec<TrafficSelector>,
    transport: bool,
    rekey_sa: Option<u32>,
    error: Option<u16>,
}

fn parts<'m, 'a>(inner: &'m [Payload<'a>]) -> Parts<'m, 'a> {
    let mut p = Parts::default();
    for x in inner {
        match x {
            Payload::Sa(s) => p.sa = Some(s),
            Payload::Nonce(n) => p.nonce = Some(n),
            Payload::Ke(k) => p.ke = Some(*k),
            Payload::TsI(t) => p.tsi = t.iter().take(TS_LIMIT).collect(),
            Payload::TsR(t) => p.tsr = t.iter().take(TS_LIMIT).collect(),
            Payload::Notify(n) if n.kind == notify::USE_TRANSPORT_MODE => p.transport = true,
            Payload::Notify(n) if n.kind == notify::REKEY_SA && n.protocol == protocol::ESP => {
                p.rekey_sa = <[u8; 4]>::try_from(n.spi).ok().map(u32::from_be_bytes)
            }
            Payload::Notify(n) if n.is_error() && p.error.is_none() => p.error = Some(n.kind),
            _ => {}
        }
    }
    p
}

impl Endpoint {
    /// Creates another CHILD_SA of the peer's configuration `child` on an established IKE
    /// SA (section 1.3.1): what a mobile node does for its second SA of RFC 4877.
    pub fn create_child(&mut self, now: Instant, ike: IkeSaId, child: &str) -> bool {
        self.with_sa(now, ike, |ep, sa| {
            let p = sa.peer?;
            let ci = ep.config.peers[p]
                .children
                .iter()
                .position(|c| c.name == child)?;
            Some(Queued::CreateChild(ci))
        })
    }

    /// Rekeys the CHILD_SA whose inbound SPI is `inbound` (section 1.3.3); the old pair is
    /// deleted once the new one is up.
    pub fn rekey_child(&mut self, now: Instant, ike: IkeSaId, inbound: u32) -> bool {
        self.with_sa(now, ike, |_, sa| {
            let c = sa.children.iter_mut().find(|c| c.inbound == inbound)?;
            (!c.rekeying).then(|| {
                c.rekeying = true;
                Queued::RekeyChild(inbound)
            })
        })
    }

    /// Rekeys the IKE SA (section 1.3.2); its CHILD_SAs move to the new one
    /// ([`IkeEvent::IkeRekeyed`]).
    pub fn rekey_ike(&mut self, now: Instant, ike: IkeSaId) -> bool {
        self.with_sa(now, ike, |_, _| Some(Queued::RekeyIke))
    }

    /// Deletes the CHILD_SA whose inbound SPI is `inbound` (section 1.4.1).
    pub fn delete_child(&mut self, now: Instant, ike: IkeSaId, inbound: u32) -> bool {
        self.with_sa(now, ike, |_, sa| {
            sa.children
                .iter()
                .any(|c| c.inbound == inbound)
                .then_some(Queued::DeleteChild(inbound))
        })
    }

    pub(super) fn with_sa(
        &mut self,
        now: Instant,
        ike: IkeSaId,
        f: impl FnOnce(&mut Endpoint, &mut IkeSa) -> Option<Queued>,
    ) -> bool {
        let Some(mut sa) = self.sas.remove(&ike) else {
            return false;
        };
        let q = if sa.state == IkeState::Established {
            f(self, &mut sa)
        } else {
            None
        };
        if let Some(q) = q {
            self.enqueue(now, &mut sa, q);
        }
        self.sas.insert(ike, sa);
        q.is_some()
    }

    pub(super) fn send_create_child(&mut self, now: Instant, sa: &mut IkeSa, q: Queued) {
        let Some(p) = sa.peer else {
            return;
        };
        let pc = self.config.peers[p].clone();
        let ni = self.nonce();
        match q {
            Queued::RekeyIke => {
                let suite = sa.suite.expect("established");
                let spi = self.fresh_spi();
                let keypair = KeyPair::generate(suite.group, &mut self.rng);
                let payloads = [
                    Payload::Sa(SaPayload {
                        proposals: vec![suite.proposal(1, spi.to_be_bytes().to_vec())],
                    }),
                    Payload::Nonce(&ni),
                    Payload::Ke(KeyExchange {
                        group: suite.group.id(),
                        data: keypair.public(),
                    }),
                ];
                self.send_request(now, sa, exchange::CREATE_CHILD_SA, &payloads, Some(q));
                sa.pending = Some(Pending::Ike { spi, ni, keypair });
            }
            Queued::CreateChild(_) | Queued::RekeyChild(_) => {
                let (ci, rekeys, tsi, tsr) = match q {
                    Queued::RekeyChild(old) => {
                        let Some(c) = sa.children.iter().find(|c| c.inbound == old) else {
                            return;
                        };
                        (c.config, Some(old), c.local_ts.clone(), c.remote_ts.clone())
                    }
                    Queued::CreateChild(ci) => {
                        let cc = &pc.children[ci];
                        (ci, None, cc.local_ts.clone(), cc.remote_ts.clone())
                    }
                    _ => return,
                };
                let cc = &pc.children[ci];
                let inbound = self.fresh_child_spi();
                let group = cc.proposals.first().and_then(|s| s.group);
                let keypair = group.map(|g| KeyPair::generate(g, &mut self.rng));
                let old_spi = rekeys.map(|s| s.to_be_bytes());
                let tsi_b = ts_bytes(&tsi);
                let tsr_b = ts_bytes(&tsr);
                let mut payloads = Vec::new();
                if let Some(o) = &old_spi {
                    payloads.push(Payload::Notify(Notify {
                        protocol: protocol::ESP,
                        spi: o,
                        kind: notify::REKEY_SA,
                        data: &[],
                    }));
                }
                if cc.mode == Mode::Transport {
                    payloads.push(notify_payload(notify::USE_TRANSPORT_MODE, &[]));
                }
                payloads.push(Payload::Sa(SaPayload {
                    proposals: cc
                        .proposals
                        .iter()
                        .enumerate()
                        .map(|(i, s)| s.proposal(i as u8 + 1, inbound))
                        .collect(),
                }));
                payloads.push(Payload::Nonce(&ni));
                if let Some(k) = &keypair {
                    payloads.push(Payload::Ke(KeyExchange {
                        group: k.group().id(),
                        data: k.public(),
                    }));
                }
                payloads.push(Payload::TsI(ts_view(&tsi_b)));
                payloads.push(Payload::TsR(ts_view(&tsr_b)));
                self.send_request(now, sa, exchange::CREATE_CHILD_SA, &payloads, Some(q));
                sa.pending = Some(Pending::Child {
                    config: ci,
                    inbound,
                    ni,
                    keypair,
                    tsi,
                    tsr,
                    rekeys,
                });
            }
            _ => {}
        }
    }

    /// Answers the peer's CREATE_CHILD_SA request.
    pub(super) fn respond_create_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        inner: &[Payload<'_>],
    ) -> bool {
        let x = parts(inner);
        let (Some(sa_p), Some(ni)) = (x.sa, x.nonce) else {
            self.send_response(
                sa,
                exchange::CREATE_CHILD_SA,
                &[notify_payload(notify::INVALID_SYNTAX, &[])],
            );
            return true;
        };
        if sa_p.proposals.iter().any(|p| p.protocol == protocol::IKE) {
            return self.respond_rekey_ike(now, sa, sa_p, ni, x.ke);
        }
        let p = sa.peer.expect("established");
        let pc = self.config.peers[p].clone();
        let refuse = |ep: &mut Endpoint, sa: &mut IkeSa, kind: u16, data: &[u8]| {
            ep.send_response(sa, exchange::CREATE_CHILD_SA, &[notify_payload(kind, data)]);
        };
        // A rekey names the pair by the requester's inbound SPI, our outbound one.
        let old = match x.rekey_sa {
            Some(spi) => match sa.children.iter().find(|c| c.outbound == spi) {
                Some(c) if c.rekeying => {
                    refuse(self, sa, notify::TEMPORARY_FAILURE, &[]);
                    return true;
                }
                Some(c) => Some(c.inbound),
                None => {
                    let spi_b = spi.to_be_bytes();
                    self.send_response(
                        sa,
                        exchange::CREATE_CHILD_SA,
                        &[Payload::Notify(Notify {
                            protocol: protocol::ESP,
                            spi: &spi_b,
                            kind: notify::CHILD_SA_NOT_FOUND,
                            data: &[],
                        })],
                    );
                    return true;
                }
            },
            None => None,
        };
        let chosen = match self.pick_child(&pc, &sa_p.proposals, &x.tsi, &x.tsr, x.transport, true)
        {
            Ok(c) => c,
            Err((kind, why, detail)) => {
                refuse(self, sa, kind, &[]);
                self.events.push_back(IkeEvent::Failed {
                    peer: pc.name.clone(),
                    why,
                    detail,
                });
                return true;
            }
        };
        let (ci, prop, suite, peer_spi, ntsi, ntsr) = chosen;
        // PFS (section 1.3.1): a KE in the chosen group, or INVALID_KE_PAYLOAD.
        let mut keypair = None;
        let mut g_ir = None;
        if let Some(g) = suite.group {
            match x.ke {
                Some(k) if k.group == g.id() => {
                    let kp = KeyPair::generate(g, &mut self.rng);
                    match kp.shared(k.data) {
                        Ok(z) => g_ir = Some(z),
                        Err(_) => {
                            refuse(self, sa, notify::INVALID_SYNTAX, &[]);
                            return true;
                        }
                    }
                    keypair = Some(kp);
                }
                _ => {
                    self.counters.invalid_ke += 1;
                    refuse(self, sa, notify::INVALID_KE_PAYLOAD, &g.id().to_be_bytes());
                    return true;
                }
            }
        }
        let inbound = self.fresh_child_spi();
        let nr = self.nonce();
        let mut prop = prop;
        prop.spi = inbound.to_be_bytes().to_vec();
        let tsi_b = ts_bytes(&ntsi);
        let tsr_b = ts_bytes(&ntsr);
        let mut out = Vec::new();
        if x.transport {
            out.push(notify_payload(notify::USE_TRANSPORT_MODE, &[]));
        }
        out.push(Payload::Sa(SaPayload {
            proposals: vec![prop],
        }));
        out.push(Payload::Nonce(&nr));
        if let Some(k) = &keypair {
            out.push(Payload::Ke(KeyExchange {
                group: k.group().id(),
                data: k.public(),
            }));
        }
        out.push(Payload::TsI(ts_view(&tsi_b)));
        out.push(Payload::TsR(ts_view(&tsr_b)));
        self.send_response(sa, exchange::CREATE_CHILD_SA, &out);
        self.child_up(
            now,
            sa,
            NewChild {
                config: (p, ci),
                suite,
                inbound,
                outbound: peer_spi,
                local_ts: ntsr,
                remote_ts: ntsi,
                we_initiated: false,
                g_ir: g_ir.as_deref().map(|z| &z[..]),
                ni,
                nr: &nr,
                rekeys: old,
            },
        );
        true
    }

    fn respond_rekey_ike(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        sa_p: &SaPayload,
        ni: &[u8],
        ke: Option<KeyExchange<'_>>,
    ) -> bool {
        let accepted = self.config.proposals.clone();
        let chosen = choose(&sa_p.proposals, |c| {
            let spi = u64::from_be_bytes(c.spi.as_slice().try_into().ok()?);
            IkeSuite::from_single(c)
                .filter(|s| accepted.contains(s) && spi != 0)
                .map(|s| (s, spi))
        });
        let Some((prop, (suite, peer_spi))) = chosen else {
            self.counters.no_proposal_chosen += 1;
            self.send_response(
                sa,
                exchange::CREATE_CHILD_SA,
                &[notify_payload(notify::NO_PROPOSAL_CHOSEN, &[])],
            );
            return true;
        };
        let Some(ke) = ke.filter(|k| k.group == suite.group.id()) else {
            self.counters.invalid_ke += 1;
            self.send_response(
                sa,
                exchange::CREATE_CHILD_SA,
                &[notify_payload(
                    notify::INVALID_KE_PAYLOAD,
                    &suite.group.id().to_be_bytes(),
                )],
            );
            return true;
        };
        let keypair = KeyPair::generate(suite.group, &mut self.rng);
        let Ok(shared) = keypair.shared(ke.data) else {
            self.send_response(
                sa,
                exchange::CREATE_CHILD_SA,
                &[notify_payload(notify::INVALID_SYNTAX, &[])],
            );
            return true;
        };
        let spi = self.fresh_spi();
        let nr = self.nonce();
        let mut prop = prop;
        prop.spi = spi.to_be_bytes().to_vec();
        self.send_response(
            sa,
            exchange::CREATE_CHILD_SA,
            &[
                Payload::Sa(SaPayload {
                    proposals: vec![prop],
                }),
                Payload::Nonce(&nr),
                Payload::Ke(KeyExchange {
                    group: suite.group.id(),
                    data: keypair.public(),
                }),
            ],
        );
        // Section 2.18: the requester is the new SA's initiator.
        self.move_to_new_ike_sa(now, sa, suite, &shared, ni, &nr, peer_spi, spi, false);
        true
    }

    /// Builds the rekeyed IKE SA, moves the CHILD_SAs to it and reports the move.
    #[allow(clippy::too_many_arguments)]
    fn move_to_new_ike_sa(
        &mut self,
        now: Instant,
        old: &mut IkeSa,
        suite: IkeSuite,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        we_initiated: bool,
    ) {
        let keys = old
            .keys
            .as_ref()
            .expect("established")
            .rekey(&suite, g_ir, ni, nr, spi_i, spi_r);
        let mut new = self.placeholder(old);
        new.initiator = we_initiated;
        new.peer = old.peer;
        new.spi_i = spi_i;
        new.spi_r = spi_r;
        new.state = IkeState::Established;
        new.suite = Some(suite);
        new.ni = ni.to_vec();
        new.nr = nr.to_vec();
        new.keys = Some(keys);
        new.nat_local = old.nat_local;
        new.nat_remote = old.nat_remote;
        new.children = std::mem::take(&mut old.children);
        new.created = now;
        new.last_heard = now;
        new.last_keepalive = old.last_keepalive;
        old.replaced = true;
        let id = new.ours();
        self.events.push_back(IkeEvent::IkeRekeyed {
            old: old.ours(),
            new: id,
        });
        self.sas.insert(id, new);
    }

    /// The answer to our CREATE_CHILD_SA.
    pub(super) fn on_create_child_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        inner: &[Payload<'_>],
    ) -> bool {
        let Some(pending) = sa.pending.take() else {
            return true;
        };
        let x = parts(inner);
        let peer = sa
            .peer
            .map(|p| self.config.peers[p].name.clone())
            .unwrap_or_default();
        match pending {
            Pending::Ike { spi, ni, keypair } => {
                let got = x.sa.and_then(|s| match s.proposals.as_slice() {
                    [one] => {
                        let spi_r = u64::from_be_bytes(one.spi.as_slice().try_into().ok()?);
                        IkeSuite::from_single(one)
                            .filter(|s| Some(*s) == sa.suite && spi_r != 0)
                            .map(|s| (s, spi_r))
                    }
                    _ => None,
                });
                let shared = x.ke.and_then(|k| keypair.shared(k.data).ok());
                match (got, x.nonce, shared) {
                    (Some((suite, spi_r)), Some(nr), Some(z)) => {
                        self.move_to_new_ike_sa(now, sa, suite, &z, &ni, nr, spi, spi_r, true);
                        // The old SA goes: our Delete on it (section 1.3.2).
                        sa.queue.push_front(Queued::DeleteIke);
                    }
                    _ => self.events.push_back(IkeEvent::Failed {
                        peer,
                        why: Failure::PeerError(x.error.unwrap_or(notify::INVALID_SYNTAX)),
                        detail: format!("IKE SA rekey with {} refused or malformed", sa.remote),
                    }),
                }
            }
            Pending::Child {
                config,
                inbound,
                ni,
                keypair,
                tsi,
                tsr,
                rekeys,
            } => {
                let p = sa.peer.expect("established");
                let cc = self.config.peers[p].children[config].clone();
                let got = x.sa.and_then(|s| match s.proposals.as_slice() {
                    [one] => ChildSuite::from_single(one)
                        .filter(|(suite, spi)| *spi > 255 && offered(&cc.proposals, suite, true)),
                    _ => None,
                });
                let inside = |got: &[TrafficSelector], asked: &[TrafficSelector]| {
                    !got.is_empty()
                        && got
                            .iter()
                            .all(|g| asked.iter().any(|a| crate::ts::within(g, a)))
                };
                let g_ir = match (&keypair, x.ke) {
                    (Some(kp), Some(k)) if k.group == kp.group().id() => kp.shared(k.data).ok(),
                    _ => None,
                };
                let ok = match (got, x.nonce) {
                    (Some((suite, spi)), Some(nr))
                        if x.error.is_none()
                            && inside(&x.tsi, &tsi)
                            && inside(&x.tsr, &tsr)
                            && x.transport == (cc.mode == Mode::Transport)
                            && (keypair.is_none() || g_ir.is_some()) =>
                    {
                        Some((suite, spi, nr))
                    }
                    _ => None,
                };
                if let Some(old) = rekeys {
                    if let Some(c) = sa.children.iter_mut().find(|c| c.inbound == old) {
                        c.rekeying = false;
                    }
                }
                match ok {
                    Some((suite, spi, nr)) => {
                        self.counters.child_established += 1;
                        self.child_up(
                            now,
                            sa,
                            NewChild {
                                config: (p, config),
                                suite,
                                inbound,
                                outbound: spi,
                                local_ts: x.tsi.clone(),
                                remote_ts: x.tsr.clone(),
                                we_initiated: true,
                                g_ir: g_ir.as_deref().map(|z| &z[..]),
                                ni: &ni,
                                nr,
                                rekeys,
                            },
                        );
                        if let Some(old) = rekeys {
                            // Section 2.8: the rekeying end deletes the old pair.
                            sa.queue.push_front(Queued::DeleteChild(old));
                        }
                    }
                    None => {
                        let why = match x.error {
                            Some(notify::NO_PROPOSAL_CHOSEN) => {
                                self.counters.no_proposal_chosen += 1;
                                Failure::NoProposalChosen
                            }
                            Some(notify::TS_UNACCEPTABLE) => {
                                self.counters.ts_unacceptable += 1;
                                Failure::TsUnacceptable
                            }
                            Some(k) => Failure::PeerError(k),
                            None => Failure::PeerError(notify::INVALID_SYNTAX),
                        };
                        if x.error == Some(notify::TEMPORARY_FAILURE) {
                            // Both ends rekeyed at once; ours is tried again later.
                            if let Some(old) = rekeys {
                                if let Some(c) = sa.children.iter_mut().find(|c| c.inbound == old) {
                                    c.created = now;
                                }
                            }
                        }
                        self.events.push_back(IkeEvent::Failed {
                            peer,
                            why,
                            detail: format!(
                                "CHILD_SA {} with {} {}: {why}",
                                cc.name,
                                sa.remote,
                                if rekeys.is_some() {
                                    "rekey refused"
                                } else {
                                    "refused"
                                }
                            ),
                        });
                    }
                }
            }
        }
        true
    }
}
