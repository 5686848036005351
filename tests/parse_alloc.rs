//! Parsing a realistic INVITE allocates nothing on the heap: the header
//! index lives inline and every view borrows the message bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use callgate::sip::message::{Limits, SipMessage};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwards to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "../benches/parse.rs"]
#[allow(dead_code)]
mod bench_messages;

#[test]
fn parse_and_typed_views_do_not_allocate() {
    let data = Bytes::from_static(bench_messages::INVITE.as_bytes());
    let limits = Limits::default();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let m = SipMessage::parse(data, &limits).expect("parses");
    let ok = m.validate().is_ok();
    let via = m.top_via().map(|v| v.host.len()).unwrap_or(0);
    let cseq = m.cseq().map(|c| c.seq).unwrap_or(0);
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(ok && via > 0 && cseq == 1);
    assert_eq!(after - before, 0, "heap allocations while parsing");
}
