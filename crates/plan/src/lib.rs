//! theseus-plan: pure functions of (snapshot, spec). No I/O, no clock.
