// Package sdk makes a message consumer migration-aware for ms2m: after a
// live migration its state equals that of a consumer that never moved —
// nothing lost, nothing applied twice, order kept.
//
// # Sequence numbers and de-duplication
//
// Producers stamp every message with a per-queue sequence number in the
// x-ms2m-seq header (Publisher does). A Consumer remembers the last number
// it applied and acks without applying anything at or below it: during a
// handoff the replay queue repeats what the source applied before the
// checkpoint, and the primary queue what the source left unacked. Messages
// without the header are applied at least once and counted apart. A running
// Digest over (seq, payload) lets a test compare the consumer's state with an
// independent reference.
//
// # The handoff
//
// The controller binds a replay queue beside the primary queue, then
// checkpoints the source. The restored process starts consuming nothing but
// its control queue, ms2m.control.<pod name>, in mode AwaitingReplay; the
// source keeps consuming the primary queue. Then:
//
//	START_REPLAY{queue}  consume the replay queue                 -> Replaying
//	END_REPLAY           cancel it, apply what it delivered,
//	                     basic.get it until empty                  -> Draining
//	                     consume the primary queue                 -> Primary
//
// The source, meanwhile, is told at the cutover to let go of the stream:
//
//	RELEASE{replyTo}     cancel the primary queue's consumer, apply
//	                     and ack what it delivered, answer RELEASED -> Released
//
// A released source consumes nothing but its control queue, for good, and
// keeps serving until its pod is removed, which the controller does once
// the target is confirmed in its Services. Its answer is what lets the
// controller switch the stream without waiting for the pod to go; the
// source says at its fence (FENCE_PASSED, Report.Releases) that it
// understands RELEASE, and a source that does not is deleted instead.
//
// A process that was never restored consumes the primary queue at once.
// A consumer that is shut down (Run's context ends: its pod is going)
// removes its control queue unless a control message waits in it or
// something else reads it, so pods that come and go leave no queue behind;
// a killed one leaves it to the next pod of its name, or to the controller.
// Control messages out of place are logged, counted and, where obeying them
// could lose messages, ignored (END_REPLAY before any START_REPLAY).
//
// What the controller must guarantee: the replay queue holds every message
// after the checkpoint's LastSeq, i.e. it was bound before the source had
// applied the first message it holds. Otherwise the restored consumer applies
// past a hole, and says so: Counters.Gaps and an error in the log.
//
// # Knowing it was restored
//
// A restored process keeps the source's environment and hostname, so it
// learns its pod from files the runtime mounts fresh (IdentityFiles: the
// downward-API pod UID and name, /etc/hostname). It reads them at start,
// before every reconnect and every IdentityPoll; when they name another pod
// (by UID when known: a StatefulSet restore keeps the name), it ends its
// broker session and reconnects in AwaitingReplay, on the new pod's control
// queue. CRIU's tcp-close kills the source's connection in the restored
// process anyway; the consumer reconnects with backoff after any broker
// failure.
//
// # Deliveries of a dead session
//
// Messages that the source had prefetched but not applied are in the
// checkpoint. Once a restore is detected they are dropped, neither applied nor
// acked, together with the session they came on: they were prefetched before
// the checkpoint, so the source applies and acks them itself, and the replay
// queue (bound before the checkpoint) holds them for the target. Applying
// them would also be correct — they continue the stream in order and
// de-duplication absorbs the replay's copies — but the client library
// discards a dead connection's buffered deliveries on its own, so only a
// rule of dropping them all is deterministic. After a plain reconnect
// (no restore) the broker requeues them.
//
// Between the restore and its detection (at most IdentityPoll, and the
// connection is dead within ~0.3 s) the restored process may still apply
// some of them: for the same reason, that is harmless.
//
// # Handler errors
//
// A failed handler call hands the message back with everything prefetched
// after it, by closing the data channel (the one way every queue type
// returns deliveries in order: a quorum queue puts a message nacked with
// requeue behind those that followed it), and pauses the consumer
// (RetryMin, doubling); the sequence does not advance.
//
// The library's automatic connection recovery is never enabled: it would
// re-subscribe the primary queue after a restore before the identity check.
package sdk
