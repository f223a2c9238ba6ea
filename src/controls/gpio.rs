//! Buttons that open and close the room, and the status LED.
//!
//! The pins sit behind the small [`Pins`] trait: [`RppalPins`] drives the
//! header of a real Pi (Pi 1 to 5, through rppal), [`SimulatedPins`] takes
//! level changes from a Unix datagram socket so the same logic runs — and is
//! tested against a real Janus — on machines without GPIO. Edges arrive by
//! interrupt (no polling); the [`Debouncer`] turns them into presses.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::config::GpioSettings;
use crate::room::{Command, RoomHandle};
use crate::state::Desired;
use crate::status::{Led, StatusSource};

/// How often the LED task looks at the status; also the blink half-period.
const LED_TICK: Duration = Duration::from_millis(250);

/// The GPIO header cannot be used as configured.
#[derive(Debug, thiserror::Error)]
#[error("gpio: {0}")]
pub struct GpioError(String);

/// Called with the pin's new level (`true` = high) on every edge.
pub type EdgeHandler = Box<dyn FnMut(bool) + Send + 'static>;

/// Internal resistor on an input pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// Pull-up: a button to ground reads low when pressed.
    Up,
    /// Pull-down: a button to 3.3 V reads high when pressed.
    Down,
}

/// The GPIO pins the agent uses.
pub trait Pins: Send {
    /// Calls `on_edge` on every level change of input `pin`, from an interrupt.
    fn watch(&mut self, pin: u8, pull: Pull, on_edge: EdgeHandler) -> Result<(), GpioError>;
    /// Drives output `pin` high or low.
    fn set(&mut self, pin: u8, high: bool) -> Result<(), GpioError>;
}

/// The real header, through rppal.
pub struct RppalPins {
    gpio: rppal::gpio::Gpio,
    inputs: Vec<rppal::gpio::InputPin>,
    outputs: HashMap<u8, rppal::gpio::OutputPin>,
}

impl RppalPins {
    /// Opens the header; fails on a machine without one.
    pub fn open() -> Result<Self, GpioError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|e| {
            GpioError(format!(
                "gpio.enabled = true but this machine's GPIO cannot be used ({e}): \
                 set gpio.enabled = false, or gpio.simulate for a test"
            ))
        })?;
        Ok(Self {
            gpio,
            inputs: Vec::new(),
            outputs: HashMap::new(),
        })
    }

    fn pin(&self, pin: u8) -> Result<rppal::gpio::Pin, GpioError> {
        self.gpio.get(pin).map_err(|e| pin_error(pin, e))
    }
}

impl Pins for RppalPins {
    fn watch(&mut self, pin: u8, pull: Pull, mut on_edge: EdgeHandler) -> Result<(), GpioError> {
        let raw = self.pin(pin)?;
        let mut input = match pull {
            Pull::Up => raw.into_input_pullup(),
            Pull::Down => raw.into_input_pulldown(),
        };
        // Debouncing is ours (see Debouncer), the same on every backend.
        input
            .set_async_interrupt(rppal::gpio::Trigger::Both, None, move |event| {
                on_edge(event.trigger == rppal::gpio::Trigger::RisingEdge);
            })
            .map_err(|e| GpioError(format!("GPIO {pin}: cannot watch for presses: {e}")))?;
        self.inputs.push(input);
        Ok(())
    }

    fn set(&mut self, pin: u8, high: bool) -> Result<(), GpioError> {
        if !self.outputs.contains_key(&pin) {
            let output = self.pin(pin)?.into_output_low();
            self.outputs.insert(pin, output);
        }
        if let Some(output) = self.outputs.get_mut(&pin) {
            if high {
                output.set_high();
            } else {
                output.set_low();
            }
        }
        Ok(())
    }
}

/// The pins held by simulated backends in this process. rppal keeps the same
/// record, in the one `GpioState` every `Gpio` shares: `Gpio::get` fails with
/// `Error::PinUsed` while a `Pin` (or the `InputPin`/`OutputPin` made from it)
/// for that number exists, and the pin is free again when that value drops.
static SIMULATED_TAKEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A simulated pin held by this process, released on drop, as rppal's `Pin`.
#[derive(Debug)]
struct Held(u8);

impl Held {
    /// Takes `pin`, or fails with rppal's error for a pin in use.
    fn take(pin: u8) -> Result<Self, GpioError> {
        let mut taken = SIMULATED_TAKEN
            .lock()
            .map_err(|_| GpioError("simulated GPIO state poisoned".into()))?;
        if taken.contains(&pin) {
            return Err(pin_error(pin, rppal::gpio::Error::PinUsed(pin)));
        }
        taken.push(pin);
        Ok(Self(pin))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut taken) = SIMULATED_TAKEN.lock() {
            taken.retain(|&p| p != self.0);
        }
    }
}

/// Pins simulated through a Unix datagram socket: each datagram
/// `"<pin> <0|1>"` is a level change on that pin. Outputs are logged.
///
/// It follows rppal's rules: a pin is held from `watch`/`set` until this
/// value drops (taking a held one fails with rppal's "Pin N is already in
/// use"), and once it drops no edge reaches a handler any more — as an
/// `InputPin`'s interrupt ends with it.
pub struct SimulatedPins {
    handlers: Arc<Mutex<HashMap<u8, EdgeHandler>>>,
    held: Vec<Held>,
    socket: UnixDatagram,
}

impl SimulatedPins {
    /// Listens on `path` (replacing a stale socket file).
    pub fn bind(path: &Path) -> Result<Self, GpioError> {
        let _ = std::fs::remove_file(path);
        let fail =
            |e: std::io::Error| GpioError(format!("gpio.simulate = {}: {e}", path.display()));
        let socket = UnixDatagram::bind(path).map_err(fail)?;
        let receiver = socket.try_clone().map_err(fail)?;
        let handlers: Arc<Mutex<HashMap<u8, EdgeHandler>>> = Arc::default();
        let dispatch = Arc::clone(&handlers);
        std::thread::Builder::new()
            .name("gpio-sim".into())
            .spawn(move || dispatch_edges(&receiver, &dispatch))
            .map_err(|e| GpioError(format!("cannot start the simulated GPIO thread: {e}")))?;
        Ok(Self {
            handlers,
            held: Vec::new(),
            socket,
        })
    }

    fn hold(&mut self, pin: u8) -> Result<(), GpioError> {
        if !self.held.iter().any(|h| h.0 == pin) {
            self.held.push(Held::take(pin)?);
        }
        Ok(())
    }
}

/// Reads level changes from `socket` and calls the pin's handler, until the
/// socket is shut down.
fn dispatch_edges(socket: &UnixDatagram, handlers: &Mutex<HashMap<u8, EdgeHandler>>) {
    let mut buf = [0u8; 64];
    while let Ok(n @ 1..) = socket.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut words = text.split_whitespace();
        let pin = words.next().and_then(|p| p.parse::<u8>().ok());
        let level = words.next().and_then(|l| match l {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        });
        let (Some(pin), Some(level)) = (pin, level) else {
            log::warn!("simulated GPIO: ignoring {text:?} (expected \"<pin> <0|1>\")");
            continue;
        };
        if let Ok(mut handlers) = handlers.lock() {
            if let Some(handler) = handlers.get_mut(&pin) {
                handler(level);
            }
        }
    }
}

impl Drop for SimulatedPins {
    /// Releases the pins (`held`'s drop) and stops the edges: the handlers
    /// go, and the thread's `recv` returns once its socket is shut down.
    fn drop(&mut self) {
        if let Ok(mut handlers) = self.handlers.lock() {
            handlers.clear();
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Pins for SimulatedPins {
    fn watch(&mut self, pin: u8, _pull: Pull, on_edge: EdgeHandler) -> Result<(), GpioError> {
        self.hold(pin)?;
        let mut handlers = self
            .handlers
            .lock()
            .map_err(|_| GpioError("simulated GPIO state poisoned".into()))?;
        handlers.insert(pin, on_edge);
        Ok(())
    }

    fn set(&mut self, pin: u8, high: bool) -> Result<(), GpioError> {
        self.hold(pin)?;
        log::debug!(
            "simulated GPIO {pin} -> {}",
            if high { "high" } else { "low" }
        );
        Ok(())
    }
}

/// An rppal error about `pin`, worded the same for both backends.
fn pin_error(pin: u8, e: rppal::gpio::Error) -> GpioError {
    GpioError(format!("GPIO {pin}: {e}"))
}

/// Turns the edges of one button into presses. A press is an edge to the
/// active level after the line has been quiet for `debounce`; every edge,
/// bounce or not, restarts the quiet period. So a bouncing contact (press or
/// release) is one press, and a press is seen at its first edge, without delay.
#[derive(Debug)]
pub struct Debouncer {
    debounce: Duration,
    active_high: bool,
    last_edge: Option<Instant>,
}

impl Debouncer {
    /// A debouncer for a button that is pressed at `active_high` level.
    pub fn new(debounce: Duration, active_high: bool) -> Self {
        Self {
            debounce,
            active_high,
            last_edge: None,
        }
    }

    /// Feeds an edge to `high` at `now`; returns whether it is a press.
    pub fn edge(&mut self, high: bool, now: Instant) -> bool {
        let quiet = self
            .last_edge
            .is_none_or(|last| now.saturating_duration_since(last) >= self.debounce);
        self.last_edge = Some(now);
        quiet && high == self.active_high
    }
}

/// Opens the pins as configured: simulated when `gpio.simulate` is set,
/// the header otherwise.
pub fn open(settings: &GpioSettings) -> Result<Box<dyn Pins>, GpioError> {
    if settings.simulate.is_empty() {
        Ok(Box::new(RppalPins::open()?))
    } else {
        Ok(Box::new(SimulatedPins::bind(Path::new(
            &settings.simulate,
        ))?))
    }
}

/// Wires the configured buttons to the reconciler and starts the LED task.
pub fn start(
    settings: &GpioSettings,
    mut pins: Box<dyn Pins>,
    room: &RoomHandle,
    status: StatusSource,
) -> Result<JoinHandle<()>, GpioError> {
    let pull = if settings.active_low {
        Pull::Up
    } else {
        Pull::Down
    };
    let buttons = [
        (settings.open_pin, Button::Open),
        (settings.close_pin, Button::Close),
        (settings.toggle_pin, Button::Toggle),
    ];
    let wired = buttons
        .into_iter()
        .filter_map(|(pin, button)| Some((pin?, button)));
    for (pin, button) in wired {
        let mut debouncer = Debouncer::new(settings.debounce, !settings.active_low);
        let room = room.clone();
        pins.watch(
            pin,
            pull,
            Box::new(move |high| {
                if debouncer.edge(high, Instant::now()) {
                    let command = button.command(room.desired());
                    log::info!("button on GPIO {pin} pressed: {command:?}");
                    if !room.try_send(command) {
                        log::warn!("button on GPIO {pin}: the agent is busy, press ignored");
                    }
                }
            }),
        )?;
    }
    let led_pin = settings.led_pin;
    // The task owns the pins: they (and the buttons' interrupts) last as long
    // as it runs, with or without an LED to drive.
    Ok(tokio::spawn(async move {
        let Some(led_pin) = led_pin else {
            let _buttons = pins;
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(LED_TICK);
        let mut blink = false;
        let mut lit = None;
        loop {
            tick.tick().await;
            blink = !blink;
            let on = match status.snapshot().led() {
                Led::On => true,
                Led::Off => false,
                Led::Blinking => blink,
            };
            if lit != Some(on) {
                if let Err(e) = pins.set(led_pin, on) {
                    log::warn!("status LED: {e}");
                }
                lit = Some(on);
            }
        }
    }))
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Button {
    Open,
    Close,
    Toggle,
}

impl Button {
    fn command(self, desired: Desired) -> Command {
        match (self, desired) {
            (Self::Open, _) | (Self::Toggle, Desired::Closed) => Command::Open,
            (Self::Close, _) | (Self::Toggle, Desired::Open) => Command::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bouncing_press_is_one_press() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(50 * MS, false);
        // Active low: press = falling edge. Contact bounce within 5 ms.
        let presses: Vec<bool> = [(false, 0), (true, 2), (false, 4), (true, 5), (false, 6)]
            .iter()
            .map(|&(high, at): &(bool, u32)| d.edge(high, t0 + at * MS))
            .collect();
        assert_eq!(presses, [true, false, false, false, false]);
        // Release (with bounce), then a second real press.
        assert!(!d.edge(true, t0 + 300 * MS));
        assert!(!d.edge(false, t0 + 301 * MS), "release bounce is no press");
        assert!(!d.edge(true, t0 + 302 * MS));
        assert!(d.edge(false, t0 + 900 * MS));
    }

    #[test]
    fn active_high_buttons_press_on_rising_edges() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(20 * MS, true);
        assert!(d.edge(true, t0));
        assert!(!d.edge(false, t0 + 100 * MS));
        assert!(d.edge(true, t0 + 200 * MS));
    }

    #[test]
    fn a_simulated_pin_is_held_until_its_owner_drops_as_in_rppal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = SimulatedPins::bind(&dir.path().join("a")).expect("bind");
        let mut second = SimulatedPins::bind(&dir.path().join("b")).expect("bind");
        first
            .watch(61, Pull::Up, Box::new(|_| {}))
            .expect("a free pin");
        first.set(62, true).expect("a free pin");
        let used = second.watch(61, Pull::Up, Box::new(|_| {}));
        let used = used.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(used, "gpio: GPIO 61: Pin 61 is already in use");
        assert!(second.set(62, false).is_err(), "an output is held too");
        drop(first);
        second
            .watch(61, Pull::Up, Box::new(|_| {}))
            .expect("released");
        second.set(62, false).expect("released");
    }

    #[test]
    fn toggle_follows_the_desired_state() {
        assert_eq!(Button::Toggle.command(Desired::Open), Command::Close);
        assert_eq!(Button::Toggle.command(Desired::Closed), Command::Open);
        assert_eq!(Button::Open.command(Desired::Open), Command::Open);
    }
}
