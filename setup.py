"""Install lewm_ros as an ament_python package (colcon) or a plain Python package (pip)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_NAME = 'lewm_ros'
HERE = Path(__file__).resolve().parent


def share_files(directory: str) -> list[tuple[str, list[str]]]:
    """Map every file under ``directory`` to ``share/lewm_ros/<same relative path>``."""
    entries = {}
    for path in sorted((HERE / directory).rglob('*')):
        if path.is_file() and '__pycache__' not in path.parts:
            relative = path.relative_to(HERE)
            target = str(Path('share') / PACKAGE_NAME / relative.parent)
            entries.setdefault(target, []).append(str(relative))
    return sorted(entries.items())


setup(
    name=PACKAGE_NAME,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE_NAME]),
        ('share/' + PACKAGE_NAME, ['package.xml']),
        *share_files('launch'),
        *share_files('config'),
        *share_files('urdf'),
        *share_files('models'),
    ],
    python_requires='>=3.10',
    install_requires=[
        'setuptools',
        'numpy>=1.24',
        'torch>=2.1',
        'mujoco>=3.1',
        'opencv-python-headless>=4.8',
        'transforms3d>=0.4',
        'rosbags>=0.10',
        'h5py>=3.8',
        'safetensors>=0.4',
        'tqdm>=4.60',
        'matplotlib>=3.7',
        'pyyaml>=6.0',
        'imageio>=2.30',
    ],
    zip_safe=True,
    maintainer='lewm_ros maintainers',
    maintainer_email='lewm-ros@example.com',
    description='ROS 2 control stack around LeWorldModel: plans in the latent space of a JEPA '
                'world model learned from pixels.',
    license='Apache-2.0',
    extras_require={'test': ['pytest>=7', 'flake8>=6', 'flake8-import-order',
                             'flake8-docstrings']},
    entry_points={
        'console_scripts': [
            'perception_node = lewm_ros.nodes.perception_node:main',
            'planner_node = lewm_ros.nodes.planner_node:main',
            'actuator_node = lewm_ros.nodes.actuator_node:main',
            'sim_node = lewm_ros.nodes.sim_node:main',
            'lewm = lewm_ros.cli:main',
        ],
    },
)
