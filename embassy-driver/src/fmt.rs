//! Logging macros: `defmt` with the `defmt` feature, the `log` facade with the `log` feature,
//! nothing otherwise (the arguments are still type-checked, and cost nothing).
//!
//! Format strings use `{:?}` for non-primitive arguments, which both back ends accept
//! (`defmt::Format` for defmt, `Debug` for log).
#![macro_use]
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("dmsg-embassy: enable at most one of the `defmt` and `log` features");

macro_rules! log_impl {
    ($level:ident, $s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::$level!($s $(, $x)*);
        #[cfg(feature = "log")]
        ::log::$level!($s $(, $x)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        {
            let _ = ($( & $x ),*);
        }
    }};
}

macro_rules! trace {
    ($($t:tt)*) => { log_impl!(trace, $($t)*) };
}

macro_rules! debug {
    ($($t:tt)*) => { log_impl!(debug, $($t)*) };
}

macro_rules! info {
    ($($t:tt)*) => { log_impl!(info, $($t)*) };
}

macro_rules! warn {
    ($($t:tt)*) => { log_impl!(warn, $($t)*) };
}

macro_rules! error {
    ($($t:tt)*) => { log_impl!(error, $($t)*) };
}
