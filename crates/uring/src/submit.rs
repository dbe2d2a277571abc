//! Every SQE the transport queues, each with the reason the memory it
//! points to outlives the operation.
//!
//! Nothing here enters the kernel except when the submission queue is
//! full; the queued entries go in with the next `poll`, `flush` or `wait`.

use std::os::fd::AsRawFd;

use io_uring::opcode;
use io_uring::squeue::{Entry, Flags};
use io_uring::types::{CancelBuilder, Fd};

use crate::UringTransport;
use crate::conn::{Shutdown, State};
use crate::ops::{Op, encode};

/// MSG_WAITALL: a SEND completes when every byte is in the socket (the
/// kernel re-polls on a full socket), so one completion means "all sent"
/// and a short count only comes with an error. MSG_NOSIGNAL: a peer that
/// went away is an EPIPE completion, not a SIGPIPE.
const SEND_FLAGS: i32 = libc::MSG_WAITALL | libc::MSG_NOSIGNAL;
/// Accepted sockets: non-blocking like every socket here, close-on-exec.
const ACCEPT_FLAGS: i32 = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;

impl UringTransport {
    /// Queues one SQE and counts it in flight; false if the ring failed
    /// (the error is kept and returned by the next `poll` or `wait`).
    ///
    /// # Safety
    ///
    /// Every buffer or address `entry` points to must stay valid, neither
    /// moved nor freed nor written by us, until the operation's last
    /// completion (the first without IORING_CQE_F_MORE) has been reaped.
    unsafe fn push(&mut self, entry: &Entry) -> bool {
        // Two tries: if the queue is full, hand what is queued to the
        // kernel (the only case where a poll batch takes a second enter).
        for attempt in 0..2 {
            // SAFETY: the caller vouches for the memory `entry` points to.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.inflight += 1;
                return true;
            }
            if attempt == 0
                && let Err(e) = self.submit()
            {
                self.fail(e);
                return false;
            }
        }
        // The kernel took none of the queue (EBUSY: completions it cannot
        // post yet). Losing an operation would strand its connection, so
        // the transport reports itself failed.
        self.fail(std::io::Error::from_raw_os_error(libc::EBUSY));
        false
    }

    /// Arms multishot accept on listener `li`.
    pub(crate) fn arm_accept(&mut self, li: usize) {
        let fd = self.listeners[li].sock.as_raw_fd();
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(ACCEPT_FLAGS)
            .build()
            .user_data(encode(Op::Accept, li, 0));
        // SAFETY: multishot accept passes no address buffer; the listening
        // socket is owned by `self.listeners`, which never shrinks.
        if unsafe { self.push(&entry) } {
            self.listeners[li].armed = true;
        }
    }

    /// Arms a multishot receive on connection `index` into the buffer ring.
    pub(crate) fn arm_recv(&mut self, index: usize) {
        let bgid = self.bufs.bgid();
        let Some((_, c)) = self.conns.at_mut(index) else {
            return;
        };
        c.recv_serial = c.recv_serial.wrapping_add(1);
        let entry = opcode::RecvMulti::new(Fd(c.sock.as_raw_fd()), bgid)
            .build()
            .user_data(encode(Op::Recv, index, c.recv_serial));
        // SAFETY: the receive writes only into provided buffers, which the
        // buffer ring owns until the transport is quiesced in `Drop`; the
        // socket lives in the slot, which is freed only after this
        // operation's last completion (`ops`).
        if unsafe { self.push(&entry) } {
            let c = &mut self.conns[index];
            c.ops += 1;
            c.recv_armed = true;
        }
    }

    /// Cancels connection `index`'s current multishot receive (it holds as
    /// many buffers as it may).
    pub(crate) fn cancel_recv(&mut self, index: usize) {
        let c = &self.conns[index];
        let target = encode(Op::Recv, index, c.recv_serial);
        let entry =
            opcode::AsyncCancel::new(target)
                .build()
                .user_data(encode(Op::Cancel, index, 0));
        // SAFETY: a cancel names its target by user_data; no memory.
        if unsafe { self.push(&entry) } {
            let c = &mut self.conns[index];
            c.ops += 1;
            c.recv_cancelling = true;
        }
    }

    /// Cancels every operation on connection `index`'s socket (it is dead).
    pub(crate) fn cancel_all(&mut self, index: usize) {
        let fd = self.conns[index].sock.as_raw_fd();
        let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
            .build()
            .user_data(encode(Op::Cancel, index, 0));
        // SAFETY: a cancel by descriptor points at no memory.
        if unsafe { self.push(&entry) } {
            self.conns[index].ops += 1;
        }
    }

    /// Hands connection `index`'s queued output to the kernel: `out`
    /// becomes the in-flight buffer and a SEND covers all of it.
    pub(crate) fn start_send(&mut self, index: usize) {
        let c = &mut self.conns[index];
        debug_assert!(!c.sending && c.flight_off == c.flight.len());
        c.flight.clear();
        c.flight_off = 0;
        // The emptied in-flight buffer (and its allocation) takes new output.
        std::mem::swap(&mut c.out, &mut c.flight);
        self.push_send(index);
    }

    /// (Re)submits a SEND of `flight[flight_off..]` for connection `index`.
    /// The last SEND of a closing connection carries its SHUTDOWN linked
    /// behind it, so the FIN leaves with the last bytes, in one enter, with
    /// no poll between. (A short or failed SEND breaks the link: the
    /// SHUTDOWN completes with ECANCELED and is queued again once the rest
    /// has gone.)
    pub(crate) fn push_send(&mut self, index: usize) {
        let c = &self.conns[index];
        let rest = &c.flight[c.flight_off..];
        if rest.is_empty() {
            return;
        }
        let link = c.out.is_empty()
            && matches!(
                c.state,
                State::Closing {
                    shutdown: Shutdown::Pending,
                    ..
                }
            );
        // `send_buffer` is capped at u32::MAX by the configuration check.
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let mut entry = opcode::Send::new(Fd(c.sock.as_raw_fd()), rest.as_ptr(), len)
            .flags(SEND_FLAGS)
            .build()
            .user_data(encode(Op::Send, index, 0));
        if link {
            entry = entry.flags(Flags::IO_LINK);
            // Both in one submission: a link left open at the end of one
            // would let the SHUTDOWN run unordered.
            let room = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if room < 2
                && let Err(e) = self.submit()
            {
                self.fail(e);
                return;
            }
        }
        // SAFETY: `flight` is a heap buffer owned by the slot. While
        // `sending` is set nothing writes, grows or frees it (`send` appends
        // to `out`, never to `flight`), and the slot itself is freed only
        // after this operation's completion (`ops`); moving the `Conn` when
        // the table grows does not move the heap buffer.
        if unsafe { self.push(&entry) } {
            let c = &mut self.conns[index];
            c.ops += 1;
            c.sending = true;
            if link {
                self.push_shutdown(index);
            }
        }
    }

    /// `shutdown(SHUT_WR)` of a closing connection whose output is drained.
    pub(crate) fn push_shutdown(&mut self, index: usize) {
        let c = &self.conns[index];
        let entry = opcode::Shutdown::new(Fd(c.sock.as_raw_fd()), libc::SHUT_WR)
            .build()
            .user_data(encode(Op::Shutdown, index, 0));
        // SAFETY: no memory; the socket lives until the slot is freed,
        // after this operation's completion.
        if unsafe { self.push(&entry) } {
            let c = &mut self.conns[index];
            c.ops += 1;
            if let State::Closing { shutdown, .. } = &mut c.state {
                *shutdown = Shutdown::Sent;
            }
        }
    }

    /// Connects connection `index` to the address it holds.
    pub(crate) fn push_connect(&mut self, index: usize) {
        let c = &self.conns[index];
        let Some(addr) = c.connect_addr.as_deref() else {
            return;
        };
        let entry = opcode::Connect::new(Fd(c.sock.as_raw_fd()), addr.as_ptr().cast(), addr.len())
            .build()
            .user_data(encode(Op::Connect, index, 0));
        // SAFETY: the address is boxed in the slot (`connect_addr`), dropped
        // only when this operation's completion is reaped or with the slot,
        // which is freed after that completion.
        if unsafe { self.push(&entry) } {
            self.conns[index].ops += 1;
        }
    }

    /// Arms the read of the waker's eventfd.
    pub(crate) fn arm_wake(&mut self) {
        let fd = self.waker.raw_fd();
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(Fd(fd), buf.cast(), 8)
            .build()
            .user_data(encode(Op::Wake, 0, 0));
        // SAFETY: `wake_buf` is a Box owned by the transport, freed only in
        // `Drop` after the ring is quiesced (leaked otherwise); nothing else
        // touches it. The eventfd is held by `self.waker`.
        unsafe { self.push(&entry) };
    }

    /// Drop-time cancellation of everything still in flight.
    pub(crate) fn cancel_everything(&mut self) {
        let entry = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(0);
        // SAFETY: no memory.
        unsafe { self.push(&entry) };
    }
}
