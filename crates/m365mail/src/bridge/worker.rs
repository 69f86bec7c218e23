//! The spool's worker: delivers queued messages through their account's route, one at a time per upstream
//! mailbox (the XOAUTH2 upstream is one connection anyway) and mailboxes side by side, under the same
//! minute's pacing as direct relays; retries with back-off, pauses a throttled mailbox, gives up into the
//! dead letters with a DSN. One audit line per attempt:
//! `event="message" spool_id=… account=… from=… recipients=N size=N mode=… upstream=… fallback=… attempts=N
//! result="delivered"|"deferred"|"dead-letter" reply=…`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dsn;
use super::service::Bridge;
use super::spool::{Attempts, Due, Envelope, Spool, Verdict};

fn now_ms(bridge: &Bridge) -> u64 {
    bridge
        .options()
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs until `stop` turns true; deliveries under way are then given 10 s to finish (one cut short is
/// delivered again at the next start).
pub async fn run(
    bridge: Arc<Bridge>,
    spool: Arc<Spool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let rescan = spool.options().rescan;
    let mut lanes: tokio::task::JoinSet<(String, Option<Duration>)> = tokio::task::JoinSet::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut paused: HashMap<String, Instant> = HashMap::new();
    let mut next_rescan = Instant::now();
    // Which delivery each task is: a task that panics returns no profile, and its mailbox and message must
    // not stay busy (that would stall the mailbox's queue until a restart).
    let mut running: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
    let finished = |done: Result<(String, Option<Duration>), tokio::task::JoinError>,
                    busy: &mut HashSet<String>,
                    paused: &mut HashMap<String, Instant>,
                    running: &mut HashMap<tokio::task::Id, (String, String)>| {
        match done {
            Ok((profile, pause)) => {
                running.retain(|_, (p, _)| *p != profile);
                busy.remove(&profile);
                if let Some(pause) = pause {
                    paused.insert(profile, Instant::now() + pause);
                }
            }
            Err(error) => {
                if let Some((profile, spool_id)) = running.remove(&error.id()) {
                    tracing::error!(%error, %profile, %spool_id, "a delivery task failed; the message stays queued");
                    busy.remove(&profile);
                    spool.untake(&spool_id);
                }
            }
        }
    };
    loop {
        if *stop.borrow() {
            break;
        }
        while let Some(done) = lanes.try_join_next() {
            finished(done, &mut busy, &mut paused, &mut running);
        }
        let now = Instant::now();
        if now >= next_rescan {
            spool.rescan();
            next_rescan = now + rescan;
        }
        paused.retain(|_, until| *until > now);
        let skip: HashSet<String> = busy.iter().chain(paused.keys()).cloned().collect();
        match spool.take_due(now_ms(&bridge), &skip) {
            Ok(due) => {
                busy.insert(due.envelope.profile.clone());
                let which = (due.envelope.profile.clone(), due.envelope.id.clone());
                let task = lanes.spawn(deliver(Arc::clone(&bridge), Arc::clone(&spool), due));
                running.insert(task.id(), which);
            }
            Err(wait) => {
                let mut wait = wait.unwrap_or(rescan).min(next_rescan - now);
                if let Some(until) = paused.values().min() {
                    wait = wait.min(until.saturating_duration_since(now));
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = spool.wake.notified() => {}
                    Some(done) = lanes.join_next(), if !lanes.is_empty() => {
                        finished(done, &mut busy, &mut paused, &mut running);
                    }
                    _ = stop.changed() => break,
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while lanes.join_next().await.is_some() {}
    })
    .await;
}

/// One attempt at `due`; the profile and how long its mailbox should pause (pacing, throttling).
async fn deliver(bridge: Arc<Bridge>, spool: Arc<Spool>, due: Due) -> (String, Option<Duration>) {
    let Due {
        envelope,
        data,
        attempts,
    } = due;
    let envelope = &envelope;
    let profile = envelope.profile.clone();
    let options = bridge.options();
    // Only the header is kept for a DSN: the message itself goes to the upstream.
    let header = dsn_header(&data);
    let audit =
        |mode: &str, upstream: &str, fallback: bool, attempts: u32, result: &str, reply: &str| {
            tracing::info!(target: "m365mail::audit", event = "message", spool_id = %envelope.id,
                       account = %envelope.account, from = %envelope.from,
                       recipients = envelope.recipients.len(), size = envelope.size, mode, upstream,
                       fallback, attempts, result, reply);
        };
    let route = bridge.routes().get(&profile).cloned();
    let mode = match envelope.dsn_for {
        Some(_) => envelope.mode,
        // The account's upstream as it is now: an operator who moved it to Graph (SMTP AUTH off) gets its
        // queued messages through too.
        None => match bridge.account_now(&envelope.account) {
            Some(account) => account.upstream.unwrap_or(options.default_upstream),
            None => envelope.mode,
        },
    };
    let attempts = attempts + 1;
    let (failure_reply, permanent, throttled, retry_after) = match &route {
        None => (
            format!(
                "454 4.3.5 This bridge has no upstream for profile {profile:?}; its operator must add the profile"
            ),
            false,
            false,
            None,
        ),
        Some(route) => {
            let reserved = match route.reserve(Instant::now()) {
                Ok(at) => at,
                Err(wait) => {
                    spool.untake(&envelope.id);
                    return (profile, Some(wait));
                }
            };
            let result = route
                .deliver(
                    mode,
                    &envelope.from,
                    &envelope.recipients,
                    data,
                    options.clock.as_ref(),
                    options.graph_remember,
                )
                .await;
            match result {
                Ok(delivered) => {
                    if let Err(e) = spool.delivered(&envelope.id) {
                        tracing::error!(spool_id = %envelope.id, error = %e,
                                        "delivered, but the spool file could not be removed: it will be sent again");
                    }
                    audit(
                        mode.as_str(),
                        delivered.carrier.as_str(),
                        delivered.fallback,
                        attempts,
                        "delivered",
                        &delivered.reply,
                    );
                    return (profile, None);
                }
                Err(failure) => {
                    route.release(reserved);
                    (
                        format!("{} {}", failure.reply.code(), failure.reply.text()),
                        failure.permanent,
                        failure.throttled,
                        failure.retry_after,
                    )
                }
            }
        }
    };
    let upstream = mode.as_str();
    let now = now_ms(&bridge);
    match spool
        .options()
        .verdict(attempts, permanent, envelope.received_ms, now)
    {
        Verdict::RetryAt(at) => {
            // Never sooner than Microsoft 365 asked (Retry-After), however short the back-off.
            let at = retry_after.map_or(at, |wait| {
                at.max(now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)))
            });
            spool.deferred(
                &envelope.id,
                Attempts {
                    attempts,
                    next_ms: at,
                    last_error: Some(Spool::error_text(&failure_reply)),
                },
            );
            audit(
                mode.as_str(),
                upstream,
                false,
                attempts,
                "deferred",
                &failure_reply,
            );
            let pause = throttled.then(|| Duration::from_millis(at.saturating_sub(now)));
            (profile, pause)
        }
        Verdict::GiveUp(why) => {
            let reason = format!("{why}: {failure_reply}");
            let report = match (&envelope.dsn_for, &route) {
                (None, Some(route)) => Some(dsn_for(
                    &bridge,
                    route.mailbox(),
                    envelope,
                    &header,
                    attempts,
                    &failure_reply,
                    now,
                )),
                _ => None,
            };
            match spool.give_up(envelope, attempts, &reason, now, report) {
                Ok(dsn_id) => {
                    audit(
                        mode.as_str(),
                        upstream,
                        false,
                        attempts,
                        "dead-letter",
                        &reason,
                    );
                    if let Some(dsn_id) = dsn_id {
                        tracing::info!(target: "m365mail::audit", event = "dsn", spool_id = %dsn_id,
                                       about = %envelope.id, to = %envelope.from, result = "queued");
                    }
                }
                Err(e) => {
                    tracing::error!(spool_id = %envelope.id, error = %e,
                                    "cannot move a given-up message to dead/; it stays queued");
                    spool.deferred(
                        &envelope.id,
                        Attempts {
                            attempts,
                            next_ms: now + 60_000,
                            last_error: Some(Spool::error_text(&failure_reply)),
                        },
                    );
                }
            }
            (profile, None)
        }
    }
}

/// The header block of a message, for a DSN (at most 64 KiB).
fn dsn_header(data: &[u8]) -> Vec<u8> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |at| at + 4);
    data[..end.min(64 * 1024)].to_vec()
}

/// The DSN for `envelope` (whose message's header is `header`) as a queue entry of its own (`<id>-dsn`), sent as `mailbox` to the envelope sender.
fn dsn_for(
    bridge: &Bridge,
    mailbox: &str,
    envelope: &Envelope,
    header: &[u8],
    attempts: u32,
    reply: &str,
    now: u64,
) -> (Envelope, Vec<u8>) {
    let reply_text = reply.get(4..).unwrap_or(reply);
    let status = dsn::status_of(reply_text);
    let failure = dsn::Failure {
        host_name: &bridge.options().host_name,
        mailbox,
        to: &envelope.from,
        recipients: &envelope.recipients,
        message_id: &envelope.message_id,
        received_at: envelope.received_ms / 1000,
        attempts,
        reason: reply,
        status: &status,
    };
    let data = dsn::build(&failure, header, now / 1000);
    let dsn = Envelope {
        v: envelope.v,
        id: format!("{}-dsn", envelope.id),
        account: envelope.account.clone(),
        profile: envelope.profile.clone(),
        mode: envelope.mode,
        from: mailbox.to_owned(),
        recipients: vec![envelope.from.clone()],
        received_ms: now,
        size: data.len() as u64,
        message_id: crate::mime::message_id(&data).unwrap_or_default(),
        peer: "m365mail-bridge".into(),
        dsn_for: Some(envelope.id.clone()),
    };
    (dsn, data)
}
