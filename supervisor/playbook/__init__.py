"""The playbook as code: playbook 03's recovery trees and playbook 01's runbooks, as data."""

from .probes import PROBES as PROBES
from .probes import Probed as Probed
from .runbooks import RUNBOOKS as RUNBOOKS
from .runbooks import Runbook as Runbook
from .trees import TREES as TREES
from .trees import Leaf as Leaf
from .trees import Pending as Pending
from .trees import Question as Question
from .trees import Step as Step
from .trees import Tree as Tree
from .trees import Walk as Walk
from .trees import leaf_paths as leaf_paths
from .trees import questions as questions
from .trees import walk as walk
