"""The playbook as code: playbook 03's recovery trees and playbook 01's runbooks, as data."""

from supervisor.playbook.probes import PROBES as PROBES
from supervisor.playbook.probes import Probed as Probed
from supervisor.playbook.runbooks import RUNBOOKS as RUNBOOKS
from supervisor.playbook.runbooks import Runbook as Runbook
from supervisor.playbook.trees import TREES as TREES
from supervisor.playbook.trees import Leaf as Leaf
from supervisor.playbook.trees import Pending as Pending
from supervisor.playbook.trees import Question as Question
from supervisor.playbook.trees import Step as Step
from supervisor.playbook.trees import Tree as Tree
from supervisor.playbook.trees import Walk as Walk
from supervisor.playbook.trees import leaf_paths as leaf_paths
from supervisor.playbook.trees import questions as questions
from supervisor.playbook.trees import walk as walk
