//! `Mode::Sync`: one request at a time on the serving thread (Python's `BaseServer.process_request`).

use std::sync::Arc;

use super::Dispatch;
use crate::handler::run;
use crate::{Handler, Request};

pub(crate) struct Sync {
    handler: Arc<dyn Handler>,
}

impl Sync {
    pub(crate) fn new(handler: Arc<dyn Handler>) -> Sync {
        Sync { handler }
    }
}

impl Dispatch for Sync {
    fn capacity(&self) -> Option<usize> {
        Some(1)
    }

    fn dispatch(&mut self, request: Request) {
        run(&*self.handler, request);
    }

    fn close(&mut self, _all_done: bool) {}
}
