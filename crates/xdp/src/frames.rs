//! Bookkeeping of the transmit frames, separate from the rings so that it
//! can be tested without a kernel.
//!
//! Every transmit frame is in exactly one place: the free list (user space
//! may write it), the queue (written, waiting for a flush), or the kernel
//! (on the TX ring or sent and not yet completed). The counts always add
//! up to the pool size; debug builds check it on every change.

/// The transmit pool: free list, flush queue and the kernel's share.
#[derive(Debug)]
pub(crate) struct TxFrames<D> {
    free: Vec<D>,
    /// Written frames, oldest first; a flush hands out a prefix.
    queued: Vec<D>,
    total: usize,
}

impl<D: Copy> TxFrames<D> {
    /// A pool owning `frames`, all free.
    pub(crate) fn new(frames: Vec<D>) -> Self {
        let total = frames.len();
        Self {
            queued: Vec::with_capacity(total),
            free: frames,
            total,
        }
    }

    /// Frames user space may write.
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    /// Frames written and not yet handed to the kernel.
    pub(crate) fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Frames on the TX ring or in transmission (not completed yet).
    pub(crate) fn in_kernel(&self) -> usize {
        self.total - self.free.len() - self.queued.len()
    }

    /// Takes a free frame to write into.
    pub(crate) fn take(&mut self) -> Option<D> {
        self.free.pop()
    }

    /// Queues a written frame (taken with [`take`](Self::take)) for the
    /// next flush.
    pub(crate) fn queue(&mut self, frame: D) {
        self.queued.push(frame);
        self.check();
    }

    /// Offers every queued frame, oldest first, to `produce` in one call;
    /// `produce` returns how many of them (a prefix) the ring took. Those
    /// now belong to the kernel, the rest stay queued in order. Returns how
    /// many were taken.
    pub(crate) fn submit(&mut self, produce: impl FnOnce(&[D]) -> usize) -> usize {
        if self.queued.is_empty() {
            return 0;
        }
        let taken = produce(&self.queued).min(self.queued.len());
        self.queued.drain(..taken);
        self.check();
        taken
    }

    /// Frames the kernel completed: free again. Completions beyond the
    /// kernel's share are a kernel or caller bug; they are ignored (and
    /// caught by debug builds) rather than let the pool grow.
    pub(crate) fn complete(&mut self, done: &[D]) {
        let n = done.len().min(self.in_kernel());
        debug_assert_eq!(n, done.len(), "more completions than frames in the kernel");
        self.free.extend_from_slice(&done[..n]);
        self.check();
    }

    fn check(&self) {
        debug_assert!(self.free.len() + self.queued.len() <= self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TX ring of fixed capacity that the "kernel" drains on demand.
    struct FakeRing {
        cap: usize,
        ring: Vec<u32>,
        sent: Vec<u32>,
    }

    impl FakeRing {
        fn new(cap: usize) -> Self {
            Self {
                cap,
                ring: Vec::new(),
                sent: Vec::new(),
            }
        }
        /// Like xsk's produce after asking for the free count: takes what
        /// fits.
        fn produce(&mut self, descs: &[u32]) -> usize {
            let n = descs.len().min(self.cap - self.ring.len());
            self.ring.extend_from_slice(&descs[..n]);
            n
        }
        /// The kernel sends up to `n` frames and completes them.
        fn drain(&mut self, n: usize) -> Vec<u32> {
            let n = n.min(self.ring.len());
            let done: Vec<u32> = self.ring.drain(..n).collect();
            self.sent.extend_from_slice(&done);
            done
        }
    }

    #[test]
    fn exhaustion_is_none_and_accounting_adds_up() {
        let mut tx = TxFrames::new((0..4u32).collect());
        let mut taken = Vec::new();
        while let Some(d) = tx.take() {
            taken.push(d);
        }
        assert_eq!(taken.len(), 4);
        assert!(tx.take().is_none());
        for d in taken {
            tx.queue(d);
        }
        assert_eq!((tx.free(), tx.queued(), tx.in_kernel()), (0, 4, 0));
    }

    #[test]
    fn a_full_ring_keeps_the_rest_queued_in_order() {
        let mut tx = TxFrames::new((0..10u32).collect());
        let mut order = Vec::new();
        while let Some(d) = tx.take() {
            order.push(d);
            tx.queue(d);
        }
        let mut ring = FakeRing::new(4);
        assert_eq!(tx.submit(|d| ring.produce(d)), 4);
        assert_eq!((tx.free(), tx.queued(), tx.in_kernel()), (0, 6, 4));
        // Ring still full: nothing moves, nothing is lost.
        assert_eq!(tx.submit(|d| ring.produce(d)), 0);
        assert_eq!(tx.queued(), 6);
        // The kernel sends 3; they complete and become free.
        let done = ring.drain(3);
        tx.complete(&done);
        assert_eq!((tx.free(), tx.queued(), tx.in_kernel()), (3, 6, 1));
        // Flush until everything is out.
        for _ in 0..10 {
            tx.submit(|d| ring.produce(d));
            let done = ring.drain(usize::MAX);
            tx.complete(&done);
        }
        assert_eq!((tx.free(), tx.queued(), tx.in_kernel()), (10, 0, 0));
        assert_eq!(
            ring.sent, order,
            "every frame sent exactly once, in queue order"
        );
    }

    #[test]
    fn produce_claiming_more_than_offered_is_clamped() {
        let mut tx = TxFrames::new(vec![1u32, 2]);
        let d = tx.take().unwrap();
        tx.queue(d);
        assert_eq!(tx.submit(|_| 99), 1);
        assert_eq!((tx.free(), tx.queued(), tx.in_kernel()), (1, 0, 1));
    }

    #[test]
    fn empty_queue_does_not_call_produce() {
        let mut tx = TxFrames::new(vec![1u32]);
        assert_eq!(tx.submit(|_| panic!("must not be called")), 0);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn surplus_completions_are_ignored() {
        let mut tx = TxFrames::new(vec![1u32]);
        tx.complete(&[7, 8]);
        assert_eq!(tx.free(), 1);
    }
}
