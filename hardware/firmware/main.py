"""Reference kill-switch firmware: MicroPython on a Raspberry Pi Pico (RP2040).

Speaks the line protocol DKS1 of docs/hardware.md over the Pico's USB serial (CDC):
``HELLO`` at boot, ``HB`` every PERIOD_MS, ``PRESS`` at once on the first sample of a
press. The press is latched until the button has been back at rest for RELEASE_MS
(debounce after the trip, never before). Copy this file to the Pico as ``main.py``
(``mpremote cp hardware/firmware/main.py :main.py``).

Wiring (docs/hardware.md): an NC contact between GP15 and GND, read with the internal
pull-up, so a press or a cut wire reads high. Optional status LEDs (through 330 ohm
resistors to GND) on GP16 green, GP17 amber, GP18 red, driven by the host's ``LAMP``
messages; the on-board LED is lit while a press is latched.

Only ``Firmware`` (pure logic, no hardware) runs under CPython too; the tests drive it
and decode its lines with the host's parser, so both stay in step.
"""

PERIOD_MS = 100  # hardware/config.py heartbeat_period_s = 0.1 must match
RELEASE_MS = 50  # the contact must rest this long before the latch clears
SAMPLE_MS = 1
WDT_MS = 2000  # a hung loop stops the heartbeats anyway; the watchdog reboots it
PIN_BUTTON = 15
NORMALLY_CLOSED = True
LAMP_PINS = {"green": 16, "amber": 17, "red": 18}
FIRMWARE = "dks-pico-1.0"
SEQ_MOD = 65536
LAMP_COLOURS = {"NORMAL": "green", "THROTTLED": "amber", "RECOVERING": "amber",
                "HALTED": "red", "UNVERIFIED": "red"}


def crc16(data):
    """CRC-16/CCITT-FALSE, as in hardware/protocol.py."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frame(fields):
    # Plain concatenation and %-format: the oldest MicroPython builds have both.
    body = ",".join(["DKS1"] + fields)  # noqa: RUF005
    return "%s*%04X\n" % (body, crc16(body.encode()))  # noqa: UP031


def parse(line):
    """The fields of a valid host line, or None (bad CRC, version or syntax)."""
    line = line.strip()
    star = line.rfind("*")
    if star < 0 or len(line) - star != 5:
        return None
    body, crc = line[:star], line[star + 1:]
    try:
        if int(crc, 16) != crc16(body.encode()) or crc != crc.upper():
            return None
    except ValueError:
        return None
    fields = body.split(",")
    return fields[1:] if fields[0] == "DKS1" else None


class Firmware:
    """The protocol logic: feed it samples, get lines to send."""

    def __init__(self, boot, diff=None, period_ms=PERIOD_MS, release_ms=RELEASE_MS):
        self.boot = boot
        self.diff = diff or (lambda a, b: a - b)
        self.period_ms = period_ms
        self.release_ms = release_ms
        self.seq = 0
        self.presses = 0
        self.pressed = False
        self.rest_since = None
        self.next_hb = None
        self.lamp = "OFF"

    def _send(self, fields):
        text = frame([fields[0], str(self.seq)] + fields[1:])  # noqa: RUF005
        self.seq = (self.seq + 1) % SEQ_MOD
        return text

    def hello(self):
        return self._send(["HELLO", str(self.period_ms), str(self.boot), FIRMWARE])

    def heartbeat(self, now):
        self.next_hb = now + self.period_ms
        state = "PRESSED" if self.pressed else "OK"
        return self._send(["HB", state, str(self.presses), str(self.boot)])

    def step(self, now, active):
        """One sample: ``active`` is True while the contact says "pressed"."""
        out = []
        if active:
            self.rest_since = None
            if not self.pressed:  # trip first: the first sample sends the press
                self.pressed = True
                self.presses = (self.presses + 1) % SEQ_MOD
                out.append(self._send(["PRESS", str(self.presses)]))
        elif self.pressed:
            if self.rest_since is None:
                self.rest_since = now
            if self.diff(now, self.rest_since) >= self.release_ms:
                self.pressed = False
                self.rest_since = None
                out.append(self.heartbeat(now))  # the release is reported at once
        if self.next_hb is None or self.diff(now, self.next_hb) >= 0:
            out.append(self.heartbeat(now))
        return out

    def receive(self, line):
        fields = parse(line)
        if fields and len(fields) == 2 and fields[0] == "LAMP":
            self.lamp = fields[1]


def main():  # pragma: no cover - runs on the Pico
    import os
    import select
    import sys
    import time

    import machine
    import micropython

    micropython.kbd_intr(-1)  # a 0x03 from the host must not stop the program
    button = machine.Pin(PIN_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)
    onboard = machine.Pin("LED", machine.Pin.OUT)
    lamps = {name: machine.Pin(pin, machine.Pin.OUT, value=0) for name, pin in
             LAMP_PINS.items()}
    wdt = machine.WDT(timeout=WDT_MS)
    out = getattr(sys.stdout, "buffer", sys.stdout)
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    fw = Firmware(int.from_bytes(os.urandom(2), "little"), diff=time.ticks_diff)

    def write(text):
        out.write(text.encode() if out is not sys.stdout else text)

    write(fw.hello())
    received = ""
    while True:
        now = time.ticks_ms()
        level = button.value() == 1  # pull-up: high means the contact is open
        for text in fw.step(now, level if NORMALLY_CLOSED else not level):
            write(text)
        while poller.poll(0):
            char = sys.stdin.read(1)
            if char == "\n":
                fw.receive(received)
                received = ""
            elif len(received) < 96:
                received += char
        colour = LAMP_COLOURS.get(fw.lamp)
        blink_on = fw.lamp != "UNVERIFIED" or (now // 250) % 2 == 0
        for name, pin in lamps.items():
            pin.value(1 if name == colour and blink_on else 0)
        onboard.value(1 if fw.pressed else 0)
        wdt.feed()
        time.sleep_ms(SAMPLE_MS)


if __name__ == "__main__":  # pragma: no cover - MicroPython runs main.py as __main__
    main()
