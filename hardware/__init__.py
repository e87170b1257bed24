"""Kill-switch hardware bridges (GPIO and serial buttons) and the status lamp (docs/hardware.md).

A press reaches the same executor as ``deskctl kill`` (``Desk.kill`` with
``source="button"``: a ``button-press`` P0). Wiring, protocol and fail-safe rules:
docs/hardware.md. This is a software trip layer, not a safety-rated emergency stop.
"""

from .bridges import create_bridge as create_bridge
from .bridges import desk_callbacks as desk_callbacks
from .config import ButtonConfig as ButtonConfig
from .config import GpioButtonConfig as GpioButtonConfig
from .config import LampConfig as LampConfig
from .config import SerialLineButtonConfig as SerialLineButtonConfig
from .config import SerialModemButtonConfig as SerialModemButtonConfig
from .config import parse_button_config as parse_button_config
from .core import BridgeCore as BridgeCore
from .core import ButtonBridge as ButtonBridge
from .core import Callback as Callback
from .core import Trip as Trip
from .errors import ButtonLinkLost as ButtonLinkLost
from .errors import ButtonPortNotFound as ButtonPortNotFound
from .errors import ButtonProtocolError as ButtonProtocolError
from .errors import ButtonReadTimeout as ButtonReadTimeout
from .errors import HardwareError as HardwareError
from .gpio import GpioBridge as GpioBridge
from .gpio import load_pin_factory as load_pin_factory
from .lamp import StatusLamp as StatusLamp
from .lamp import lamp_mode as lamp_mode
from .ports import resolve_port as resolve_port
from .serial_line import SerialLineBridge as SerialLineBridge
from .serial_modem import ModemLineBridge as ModemLineBridge
