//! theseus-model: the data theseus works on. No I/O, no async: serde types only.
