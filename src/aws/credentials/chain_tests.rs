//! (to be written: replay of the SDK default-chain cases)
